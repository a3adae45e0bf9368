"""A stream's message settings: what its streamer allows viewers to say with a gift.

Held on the stream (meta fields "m:<name>", each its value as JSON text; a setting
never set has the `[messages]` default of config) and changed only through
`lua/set_stream_settings.lua`, which also emits a `settings` event (every setting
but the blocked words, which stay with the streamer).

Gifts read them through a per-worker cache (`settings_for`), never once per gift:
an entry is used for `[messages] settings_cache_ms` (2 s by default) after it was
read, so a change reaches gifts sent through any worker within that time; the
worker that took the change uses it at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import orjson

from gifting_server.auth import Identity
from gifting_server.config import MAX_INT, Messages
from gifting_server.fields import invalid
from gifting_server.ledger import keys, messages
from gifting_server.ledger.store import Store, guarded
from gifting_server.ledger.streams import run_stream_control

# In the order the script takes and answers them; blocked_words stays out of events.
FIELDS = ("enabled", "min_coins", "max_length", "blocked_words", "tts", "tts_min_coins")
PRIVATE = frozenset({"blocked_words"})
CACHE_STREAMS = 100_000  # entries a worker keeps before it starts afresh


@dataclass(frozen=True)
class MessageSettings:
    enabled: bool
    min_coins: int
    max_length: int
    blocked_words: tuple[str, ...]
    tts: bool
    tts_min_coins: int

    @classmethod
    def defaults(cls, config: Messages) -> MessageSettings:
        return cls(
            config.enabled,
            config.min_coins,
            config.max_length,
            (),
            config.tts,
            config.tts_min_coins,
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["blocked_words"] = list(self.blocked_words)
        return data

    def public(self) -> dict[str, Any]:
        """What any page may know (the client's message box): all but the blocked words."""
        return {k: v for k, v in self.as_dict().items() if k not in PRIVATE}


def parse_change(body: dict[str, Any], config: Messages) -> dict[str, Any]:
    """The settings a PUT body changes, checked: `{"messages": {any of FIELDS}}`."""
    unknown = set(body) - {"messages"}
    if unknown:
        raise invalid(f"unknown field {sorted(unknown)[0]!r}; the body is {{'messages': {{...}}}}")
    change = body.get("messages")
    if not isinstance(change, dict):
        raise invalid("messages must be an object with any of: " + ", ".join(FIELDS))
    unknown = set(change) - set(FIELDS)
    if unknown:
        raise invalid(f"unknown setting messages.{sorted(unknown)[0]}")
    checked: dict[str, Any] = {}
    for name in ("enabled", "tts"):
        if name in change:
            if type(change[name]) is not bool:
                raise invalid(f"messages.{name} must be true or false")
            checked[name] = change[name]
    bounds = {
        "min_coins": (0, MAX_INT),
        "tts_min_coins": (0, MAX_INT),
        "max_length": (1, config.max_length_limit),
    }
    for name, (low, high) in bounds.items():
        if name in change:
            value = change[name]
            if type(value) is not int or not low <= value <= high:
                raise invalid(f"messages.{name} must be an integer between {low} and {high}")
            checked[name] = value
    if "blocked_words" in change:
        checked["blocked_words"] = _blocked_words(change["blocked_words"], config)
    return checked


def _blocked_words(value: Any, config: Messages) -> list[str]:
    most, longest = config.max_blocked_words, config.max_blocked_word_length
    if not isinstance(value, list) or len(value) > most:
        raise invalid(f"messages.blocked_words must be a list of at most {most} strings")
    words: list[str] = []
    seen: set[str] = set()
    for word in value:
        if not isinstance(word, str):
            raise invalid("messages.blocked_words must hold strings")
        word = messages.cleaned(word)
        if not messages.fold(word):
            raise invalid("messages.blocked_words: a word is empty once trimmed")
        if len(word) > longest:
            raise invalid(f"messages.blocked_words: a word is over {longest} characters")
        if messages.fold(word) not in seen:  # "Bad" and "bad" are one word
            seen.add(messages.fold(word))
            words.append(word)
    return words


async def change_settings(
    store: Store, who: Identity, stream_id: str, change: dict[str, Any]
) -> MessageSettings:
    """Apply a checked change (`parse_change`) and answer every setting after it."""
    defaults = MessageSettings.defaults(store.settings.messages).as_dict()
    args: list[Any] = []
    for name in FIELDS:
        value = orjson.dumps(change[name]).decode() if name in change else ""
        args += [f"-{name}" if name in PRIVATE else name, value, orjson.dumps(defaults[name])]
    result = await run_stream_control(store, who, stream_id, "set_stream_settings", args)
    settings = _from_stored(store.settings.messages, result[2:])
    store.stream_settings[stream_id] = (store.clock(), settings)
    return settings


async def read_settings(store: Store, stream_id: str) -> MessageSettings:
    """The stream's settings as stored now (no cache)."""
    meta = keys.stream(stream_id)
    stored = await guarded(
        store.scripts.command(meta, "HMGET", meta, *(f"m:{name}" for name in FIELDS))
    )
    return _from_stored(store.settings.messages, stored)


async def settings_for(store: Store, stream_id: str) -> MessageSettings:
    """The stream's settings as a gift uses them: from this worker's cache while the
    entry is younger than `[messages] settings_cache_ms`."""
    now = store.clock()
    cached = store.stream_settings.get(stream_id)
    if cached is not None and now - cached[0] < store.settings.messages.settings_cache_ms:
        return cached[1]
    settings = await read_settings(store, stream_id)
    if len(store.stream_settings) >= CACHE_STREAMS:
        store.stream_settings.clear()
    store.stream_settings[stream_id] = (now, settings)
    return settings


def _from_stored(config: Messages, stored: list[Any]) -> MessageSettings:
    """Stored JSON texts (None: never set) over the defaults; a value that does not
    read as its setting's type counts as never set."""
    values = MessageSettings.defaults(config).as_dict()
    for name, raw in zip(FIELDS, stored, strict=True):
        if raw is None:
            continue
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if name == "blocked_words":
            if isinstance(value, list) and all(isinstance(w, str) for w in value):
                values[name] = tuple(value)
        elif type(value) is type(values[name]):
            values[name] = value
    values["blocked_words"] = tuple(values["blocked_words"])
    return MessageSettings(**values)
