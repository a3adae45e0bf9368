"""Work of one kind under way in this worker, counted, so that a close can wait for
its end: the gifts across slots, whose next step is sent by the worker once the last
one is answered (`Store.close`)."""

from __future__ import annotations

import asyncio


class UnderWay:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def held(self) -> Held:
        """Counted under way for the `with` block's length, however it ends."""
        return Held(self)

    async def ended(self) -> None:
        """Return once nothing is under way."""
        while self.count:
            await self._idle.wait()


class Held:
    """`UnderWay.held`. A class, not a generator: it is entered once per gift, and a
    generator's context manager costs several times as much."""

    __slots__ = ("under_way",)

    def __init__(self, under_way: UnderWay) -> None:
        self.under_way = under_way

    def __enter__(self) -> None:
        under_way = self.under_way
        under_way.count += 1
        under_way._idle.clear()

    def __exit__(self, *exc_info: object) -> None:
        under_way = self.under_way
        under_way.count -= 1
        if not under_way.count:
            under_way._idle.set()
