"""A battle's record and how the API shows it: the one place that knows both.

The record is a hash in the inviting stream's slot (`keys.battle`), written only by
the battle scripts (docs/battles.md has its states). The public body, the answer of
`GET /v1/battles/{id}` and of every battle endpoint and the body of each `battle`
event, is built here from the record and, while the battle is live, both sides'
points and top contributors (each in its own stream's slot).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ids import is_key
from gifting_server.ledger import keys
from gifting_server.ledger.store import Store, guarded

TOP = 3  # top contributors shown per side
# The record's states as the API shows them: a battle being set up between two of
# the server's own steps is shown as what it is about to be.
PUBLIC_STATUS = {
    "inviting": "invited",
    "invited": "invited",
    "accepting": "live",
    "live": "live",
    "ended": "ended",
    "declined": "declined",
    "cancelled": "cancelled",
}
FINAL = frozenset({"ended", "declined", "cancelled"})
_NAMES_CACHED = 10_000


@dataclass(frozen=True)
class Record:
    battle_id: str
    fields: dict[str, str]

    @property
    def status(self) -> str:
        return self.fields.get("status", "")

    @property
    def public_status(self) -> str:
        return PUBLIC_STATUS.get(self.status, self.status)

    @property
    def streams(self) -> tuple[str, str]:
        return self.fields.get("a", ""), self.fields.get("b", "")

    @property
    def streamers(self) -> tuple[str, str]:
        return self.fields.get("a_streamer", ""), self.fields.get("b_streamer", "")

    def number(self, name: str) -> int:
        try:
            return int(self.fields.get(name) or 0)
        except ValueError:
            raise _corrupt(self.battle_id) from None


def checked_battle_id(value: Any) -> str:
    """A battle id as the API takes it: `bt_<hex>.<stream id>` (a key's characters)."""
    if not (is_key(value) and value.startswith(keys.BATTLE_ID_PREFIX) and "." in value):
        raise GiftingError(ErrorCode.UNKNOWN_BATTLE, "no such battle")
    return value


async def read(store: Store, battle_id: str) -> Record | None:
    raw = await guarded(store.redis.hgetall(keys.battle(battle_id)))
    fields = {str(name): str(value) for name, value in raw.items()}
    return Record(battle_id, fields) if fields else None


async def read_known(store: Store, battle_id: str) -> Record:
    record = await read(store, checked_battle_id(battle_id))
    if record is None:
        raise GiftingError(ErrorCode.UNKNOWN_BATTLE, "no such battle")
    return record


@dataclass(frozen=True)
class Side:
    stream_id: str
    streamer_id: str
    streamer_name: str
    points: int
    top: list[tuple[str, int]]  # (user id, coins), best first


async def live_side(store: Store, record: Record, index: int) -> Side:
    """One side of a battle that is not over: its points and top as they stand."""
    stream_id = record.streams[index]
    meta, top = await asyncio.gather(
        guarded(
            store.redis.hmget(keys.stream(stream_id), ["battle", "battle_closed", "battle_points"])
        ),
        guarded(store.redis.zrevrange(keys.battle_top(stream_id), 0, TOP - 1, withscores=True)),
    )
    mine = f"{record.battle_id}|"
    if not any(str(value).startswith(mine) for value in meta[:2] if value):
        return side_of(record, index, 0, [])  # not started yet
    rows: list[tuple[str, float]] = top  # type: ignore[assignment]  # withscores: pairs
    return side_of(record, index, int(meta[2] or 0), [(str(u), int(c)) for u, c in rows])


def side_of(record: Record, index: int, points: int, top: list[tuple[str, int]]) -> Side:
    prefix = "ab"[index]
    streamer = record.fields.get(f"{prefix}_streamer", "")
    name = record.fields.get(f"{prefix}_name") or streamer
    return Side(record.streams[index], streamer, name, points, top)


async def sides_json(store: Store, sides: list[Side]) -> list[dict[str, Any]]:
    """The sides as the body shows them, with the contributors' names."""
    names = await _names(store, [user for side in sides for user, _ in side.top])
    return [
        {
            "stream_id": side.stream_id,
            "streamer": {"id": side.streamer_id or None, "name": side.streamer_name or None},
            "points": side.points,
            "top": [
                {"user_id": user, "name": names.get(user, user), "coins": coins}
                for user, coins in side.top
            ],
        }
        for side in sides
    ]


async def view(store: Store, record: Record) -> dict[str, Any]:
    """The public body of the battle as it stands."""
    if record.status == "ended":
        try:
            sides: list[dict[str, Any]] = orjson.loads(record.fields["final"])
        except (KeyError, orjson.JSONDecodeError):
            raise _corrupt(record.battle_id) from None
    else:
        live = record.status in ("accepting", "live")
        loaded = await asyncio.gather(
            *(live_side(store, record, i) if live else _no_points(record, i) for i in (0, 1))
        )
        sides = await sides_json(store, list(loaded))
    return body(record, sides)


async def _no_points(record: Record, index: int) -> Side:
    return side_of(record, index, 0, [])


def body(record: Record, sides: list[dict[str, Any]]) -> dict[str, Any]:
    status = record.public_status
    out: dict[str, Any] = {
        "battle_id": record.battle_id,
        "status": status,
        "duration_s": record.number("duration_s"),
        "created_at": record.number("created_at"),
    }
    if status == "invited":
        out["expires_at"] = record.number("expires_at") or None
    if record.fields.get("ends_at"):
        out["ends_at"] = record.number("ends_at")
    out["sides"] = sides
    if status == "ended":
        out["winner"] = record.fields.get("winner") or None
    if status in FINAL and record.fields.get("reason"):
        out["reason"] = record.fields["reason"]
    return out


def fragment(body: dict[str, Any]) -> str:
    """The body as `publish_battle` takes it: its JSON members without the braces."""
    return orjson.dumps(body).decode()[1:-1]


_names_cache: dict[str, str] = {}


async def _names(store: Store, users: list[str]) -> dict[str, str]:
    missing = sorted({u for u in users if u not in _names_cache})
    if missing:
        found = await asyncio.gather(
            *(guarded(store.redis.hget(keys.wallet(u), "name")) for u in missing)
        )
        if len(_names_cache) > _NAMES_CACHED:
            _names_cache.clear()
        for user, name in zip(missing, found, strict=True):
            _names_cache[user] = str(name) if name else user
    return {u: _names_cache[u] for u in users}


def _corrupt(battle_id: str) -> GiftingError:
    return GiftingError(
        ErrorCode.STORAGE_CORRUPT,
        f"battle {battle_id} has a malformed record; run `gifting-server reconcile`",
    )
