"""The stream's goal, held by the server (`lua/set_goal.lua` has the rules)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from gifting_server.auth import Identity
from gifting_server.config import MAX_INT
from gifting_server.fields import invalid
from gifting_server.ledger import messages
from gifting_server.ledger.store import Store
from gifting_server.ledger.streams import run_stream_control

MAX_TITLE = 80  # characters


@dataclass(frozen=True)
class Goal:
    target: int
    progress: int
    title: str
    counted_from: int


def checked_title(title: str) -> str:
    """A title as shown: no control characters, trimmed, at most MAX_TITLE characters.
    Refused when it had control characters or is too long (a title is the streamer's
    own text: silently changing it would hide a mistake)."""
    if messages.cleaned(title) != title.strip():
        raise invalid("title must not contain control characters")
    title = title.strip()
    if len(title) > MAX_TITLE:
        raise invalid(f"title must be at most {MAX_TITLE} characters")
    return title


async def set_goal(
    store: Store, who: Identity, stream_id: str, target: int, title: str, reset: bool
) -> Goal:
    if type(target) is not int or not 1 <= target <= MAX_INT:
        raise invalid(f"target must be an integer between 1 and {MAX_INT}")
    title = checked_title(title)
    result = await run_stream_control(
        store, who, stream_id, "set_goal", [target, orjson.dumps(title).decode(), int(reset)]
    )
    return Goal(target, int(result[2]), title, int(result[3]))
