"""The heartbeat: ping every connection, a slice at a time. A peer that answers
none for two intervals is dropped by its connection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

log = logging.getLogger("gifting_server.heartbeat")

PING_STEP = 256


class Pingable(Protocol):
    def ping(self) -> None: ...


def ping_all(connections: Sequence[Pingable]) -> None:
    _ping_step(connections, 0)


def _ping_step(connections: Sequence[Pingable], start: int) -> None:
    """Ping a slice, then let the loop read its sockets before the next one: a
    ping is a write (~10 µs), and 10,000 of them at once would stall fan-out."""
    for connection in connections[start : start + PING_STEP]:
        try:
            connection.ping()
        except Exception:
            # One broken connection must not stop the heartbeat of the others.
            log.exception("ping failed")
    if start + PING_STEP < len(connections):
        asyncio.get_running_loop().call_soon(_ping_step, connections, start + PING_STEP)
