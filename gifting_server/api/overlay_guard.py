"""This worker's open overlay connections, by stream, and their token's generation:
a rotation of the stream's overlay tokens closes those with an older one (4001,
`token_revoked`) on every worker.

A rotation reaches each worker as the stream's `overlay_revoked` event, through the
hub (`Hub.listen`): every overlay connection subscribed to the stream has a room on
its worker, so that worker takes the event. An overlay connection checks its token
against Redis when it connects and again once its subscription is live: a rotation
that came before that is seen by the check, one after it by the event. No check
per message.
"""

from __future__ import annotations

import logging
from typing import Protocol

from gifting_server import events

log = logging.getLogger("gifting_server.ws")


class Revocable(Protocol):
    def revoke(self) -> None:
        """Close the connection: its overlay token was revoked."""
        ...


class OverlayGuard:
    def __init__(self) -> None:
        self.sessions: dict[str, dict[Revocable, int]] = {}

    def add(self, stream_id: str, session: Revocable, generation: int) -> None:
        self.sessions.setdefault(stream_id, {})[session] = generation

    def discard(self, stream_id: str, session: Revocable) -> None:
        of_stream = self.sessions.get(stream_id)
        if of_stream is not None:
            of_stream.pop(session, None)
            if not of_stream:
                del self.sessions[stream_id]

    def on_revoked(self, stream_id: str, raw: bytes) -> None:
        """The hub's listener for `overlay_revoked` events."""
        try:
            generation = int(events.parse(raw)["generation"])
        except (ValueError, KeyError, TypeError):
            log.warning("stream %s: an overlay_revoked event without a generation", stream_id)
            return
        for session, held in list(self.sessions.get(stream_id, {}).items()):
            if held < generation:
                session.revoke()
