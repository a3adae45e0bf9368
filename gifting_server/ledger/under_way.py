"""Work of one kind under way in this worker, counted, so that a close can wait for
its end: the gifts across slots, whose next step is sent by the worker once the last
one is answered (`Store.close`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class UnderWay:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Counted under way for the `with` block's length, however it ends."""
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if not self.count:
                self._idle.set()

    async def ended(self) -> None:
        """Return once nothing is under way."""
        while self.count:
            await self._idle.wait()
