"""What a subscriber is told of its stream's state in `subscribed`, besides the
viewer count: whether the streamer paused the alerts, the stream's goal with its
progress, and its battle (the last `battle` event's body, or None). Sans I/O: a room
starts from what `History.head` read (the stream meta's "alerts_paused", "goal",
"coins" and "battle_pub" fields, with its newest event id) and follows the events it
takes, so that it is the state as of the room's newest event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gifting_server import events

ENVELOPE = ("event_id", "kind", "ts")


@dataclass
class StreamState:
    alerts_paused: bool = False
    goal: dict[str, Any] | None = None  # {target, title, counted_from}
    coins_total: int = 0  # followed only while a goal is set (it costs a parse per gift)
    battle: dict[str, Any] | None = None  # the last `battle` event's body

    @classmethod
    def stored(cls, paused: Any, goal: Any, coins: Any, battle: Any = None) -> StreamState:
        """From the meta fields as read (bytes or str, None when absent). `battle` is
        the last published battle state: the event body's members without braces."""
        held = events.goal_state(goal, 0)
        if held is not None:
            del held["progress"]
        flag = paused.decode() if isinstance(paused, bytes) else paused
        shown = None
        if battle:
            text = battle.decode() if isinstance(battle, bytes) else battle
            shown = orjson.loads("{" + text + "}")
        return cls(flag == "1", held, int(coins or 0), shown)

    def take(self, kind: str, raw: bytes) -> None:
        if kind == "alerts":
            self.alerts_paused = events.parse(raw).get("paused") is True
        elif kind == "goal":
            event = events.parse(raw)
            self.goal = {k: event[k] for k in ("target", "title", "counted_from")}
            self.coins_total = event["counted_from"] + event["progress"]
        elif kind == "battle":
            event = events.parse(raw)
            self.battle = {k: v for k, v in event.items() if k not in ENVELOPE}
        elif kind == "gift" and self.goal is not None:
            event = events.parse(raw)
            if not event.get("test"):  # a test alert moves no coins
                self.coins_total = max(self.coins_total, int(event.get("coins_total", 0)))

    def subscribed_fields(self) -> dict[str, Any]:
        goal = None
        if self.goal is not None:
            progress = max(0, self.coins_total - self.goal["counted_from"])
            goal = {**self.goal, "progress": progress}
        return {"alerts_paused": self.alerts_paused, "goal": goal, "battle": self.battle}
