"""The one place where the environment and config/*.toml are read.

Everything else receives a frozen `Settings`. Bad config fails at start with a
message naming the file and the key, never later in the middle of a request.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gifting_server.ids import ID_RULE, is_id

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


class ConfigError(Exception):
    """Raised with a message a person can act on."""


MAX_INT = 2**53 - 1  # exact in Lua's doubles (every amount goes through a script)
TEN_YEARS_S = 10 * 365 * 86_400

# The allowed range, both ends included, of every numeric setting. The bounds keep
# each value inside what Redis takes (a TTL becomes `SET ... PX ttl*1000`: at least
# 1 ms, far below 2^63) and exact in Lua; a count is at least 1 where 0 means nothing.
# A numeric key missing here gets DEFAULT_RANGE (tests/test_config.py wants them all).
RANGES: dict[str, dict[str, tuple[int | float, int | float]]] = {
    "economy": {
        "creator_share_bps": (1, 10_000),
        "diamonds_per_unit": (1, 1_000_000),
        "cents_per_unit": (1, 1_000_000),
        "cashout_min_diamonds": (0, MAX_INT),
        "cashout_daily_cap_cents": (0, MAX_INT),
        "holding_period_days": (0, 3650),
    },
    "transfers": {
        "relay_after_ms": (100, 86_400_000),
        "relay_every_s": (0.05, 3600.0),
        "relay_slots_per_pass": (1, 16_384),
    },
    "battles": {
        "invite_ttl_s": (1, 86_400),
        "min_duration_s": (1, 86_400),
        "max_duration_s": (1, 86_400),
        "tick_ms": (50, 60_000),
        "recover_after_ms": (100, 3_600_000),
    },
    "limits": {
        "max_gift_count": (1, 1_000_000),
        "combo_window_ms": (1, 3_600_000),
        "gift_rate_per_s": (1, 1_000_000),
        "gift_burst": (1, 1_000_000),
        "max_daily_coin_limit": (1, MAX_INT),
        "idempotency_ttl_s": (1, TEN_YEARS_S),
        "webhook_tolerance_s": (1, 86_400),
        "request_timeout_s": (0.001, 300.0),
    },
    "history": {
        "max_events": (1, 10_000_000),
    },
    "websocket": {
        "max_message_bytes": (256, 16 * 1024 * 1024),
        "tick_ms": (0, 1000),
        "rate_per_s": (1, 1_000_000),
        "burst": (1, 1_000_000),
        "abuse_close_after": (1, 1_000_000),
        "outbox_frames": (1, 1_000_000),
        "outbox_bytes": (1024, 1024 * 1024 * 1024),
        "write_buffer_bytes": (0, 64 * 1024 * 1024),
        "ping_interval_s": (1, 3600),
        "max_subscriptions": (1, 1000),
    },
    "http": {
        "request_read_timeout_s": (0.01, 3600.0),
        "max_pending_connections": (1, 1_000_000),
    },
    "messages": {
        "min_coins": (0, MAX_INT),
        "max_length": (1, 2000),
        "tts_min_coins": (0, MAX_INT),
        "max_length_limit": (1, 2000),
        "max_blocked_words": (0, 10_000),
        "max_blocked_word_length": (1, 200),
        "settings_cache_ms": (0, 3_600_000),
    },
    "overload": {
        "queue_target_ms": (1, 60_000),
        "loop_lag_target_ms": (0, 60_000),
        "min_in_flight": (0, 1_000_000),
        "max_in_flight": (1, 1_000_000),
        "max_in_flight_per_user": (1, 1_000_000),
        "retry_after_min_ms": (1, 3_600_000),
        "retry_after_max_ms": (1, 3_600_000),
    },
    "webhooks": {
        "max_age_s": (1, TEN_YEARS_S),
        "timeout_s": (0.05, 60.0),
        "retry_base_ms": (1, 3_600_000),
        "retry_max_ms": (1, 86_400_000),
        "poll_ms": (10, 60_000),
        "lease_ms": (100, 3_600_000),
        "max_per_streamer": (1, 1000),
        "max_body_bytes": (1024, 16 * 1024 * 1024),
        "max_response_bytes": (0, 16 * 1024 * 1024),
        "attempts_kept": (1, 1000),
        "batch": (1, 10_000),
    },
    "redis": {
        "replicas_acked": (0, 1000),
        # WAIT's timeout; 0 would mean "wait forever" to Redis.
        "replicas_timeout_ms": (1, 60_000),
        # Every gift waits up to this long: past ~100 ms it is most of a gift's latency.
        "gift_batch_window_ms": (0, 1000),
        "gift_calls_in_flight": (0, 1000),
    },
}
DEFAULT_RANGE: tuple[int | float, int | float] = (0, MAX_INT)


@dataclass(frozen=True)
class Gift:
    id: str
    name: str
    coins: int
    tier: int
    emoji: str = ""
    svg: str = ""

    def public(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "coins": self.coins,
            "tier": self.tier,
        }
        if self.emoji:
            data["emoji"] = self.emoji
        if self.svg:
            data["svg"] = self.svg
        return data


@dataclass(frozen=True)
class CoinPackage:
    id: str
    coins: int
    price: int  # minor units of Economy.currency


@dataclass(frozen=True)
class Economy:
    creator_share_bps: int = 5000
    currency: str = "USD"
    diamonds_per_unit: int = 2
    cents_per_unit: int = 1
    cashout_min_diamonds: int = 2000
    cashout_daily_cap_cents: int = 100_000
    holding_period_days: int = 7


@dataclass(frozen=True)
class Limits:
    max_gift_count: int = 99
    combo_window_ms: int = 3000
    gift_rate_per_s: int = 20
    gift_burst: int = 40
    require_age_verification: bool = True
    max_daily_coin_limit: int = 100_000_000
    idempotency_ttl_s: int = 86_400
    webhook_tolerance_s: int = 300
    request_timeout_s: float = 2.0


@dataclass(frozen=True)
class History:
    max_events: int = 1000


@dataclass(frozen=True)
class Transfers:
    """The relay that finishes gifts across slots left behind by a dead worker
    (ledger/transfers.py; on a cluster only)."""

    relay_after_ms: int = 5000  # a transfer this old is taken for abandoned
    relay_every_s: float = 1.0
    relay_slots_per_pass: int = 1024  # of the 16,384 slots' outboxes, per pass


@dataclass(frozen=True)
class Battles:
    """Live battles between two streams (ledger/battles.py, docs/battles.md)."""

    invite_ttl_s: int = 60  # an invite not answered in this time expires
    min_duration_s: int = 60  # a battle's length, both ends included
    max_duration_s: int = 600
    tick_ms: int = 500  # how often a live battle's state is published when it changed
    # a battle left by a step this long ago is taken over by any worker (a crash)
    recover_after_ms: int = 5000


@dataclass(frozen=True)
class WebSocket:
    max_message_bytes: int = 4096  # a bigger client message closes the connection with 1009
    tick_ms: int = 30  # events of one stream arriving within a tick share one frame
    rate_per_s: int = 20  # client messages per second per connection (token bucket)
    burst: int = 40
    abuse_close_after: int = 20  # rate-limited messages in a row before closing with 4008
    outbox_frames: int = 256  # frames queued for one slow connection before closing with 4009
    outbox_bytes: int = 1_048_576
    write_buffer_bytes: int = 65_536  # kernel-side backlog before frames queue in the outbox
    ping_interval_s: int = 20  # heartbeat: a peer that misses a pong for this long is dropped
    allowed_origins: tuple[str, ...] = ()  # browser origins allowed besides the server's own
    max_subscriptions: int = 10  # streams one connection may follow


@dataclass(frozen=True)
class Http:
    request_read_timeout_s: float = 10.0  # a request (head, body) not all in by then: closed
    max_pending_connections: int = 2048  # per worker; beyond, the oldest unfinished is closed


@dataclass(frozen=True)
class RedisOptions:
    # A money script is acknowledged only once this many replicas of its master have
    # its write (one WAIT after each pipelined write); 0: as soon as the master has it.
    replicas_acked: int = 0
    replicas_timeout_ms: int = 1000  # fewer replicas by then: service_unavailable, retry
    # The events of one send_gifts call to one stream published as one message (one
    # event a line). Workers before it read one event a message: false while any runs.
    events_per_call_message: bool = True
    # How long the first gift of an empty batch waits for others to go with it in one
    # send_gifts call (ledger/gift_batch.py); 0: only those of the same loop pass.
    # 5: most of what a longer one saves Redis, for at most 5 ms more a gift
    # (docs/performance.md, "The batching window").
    gift_batch_window_ms: int = 5
    # Group commit: with this many of those calls in flight when a window ends, its
    # gifts wait for the end of one of them and go with all that came meanwhile; 0: no
    # limit (a window's gifts go when it ends).
    gift_calls_in_flight: int = 0


@dataclass(frozen=True)
class Messages:
    """Gift messages: the defaults of a stream's settings (a streamer changes them with
    PUT /v1/streams/{id}/settings) and the bounds of what a streamer may set."""

    enabled: bool = True
    min_coins: int = 1  # a send (count x coins) below this may not carry a message
    max_length: int = 150  # characters, after trimming
    tts: bool = False
    tts_min_coins: int = 100
    max_length_limit: int = 500  # the largest max_length a streamer may set
    max_blocked_words: int = 200
    max_blocked_word_length: int = 50
    # How long a worker uses a stream's settings before it reads them again: a change
    # reaches gifts sent through other workers within this time (the worker that took
    # the change uses it at once).
    settings_cache_ms: int = 2000


@dataclass(frozen=True)
class Overload:
    """Admission of gifts past the worker's ceiling (ledger/admission.py)."""

    queue_target_ms: int = 50  # a standing queue longer than this: new gifts are refused
    loop_lag_target_ms: int = 0  # the event loop later than this: new gifts are refused (0: off)
    min_in_flight: int = 100  # gifts in flight never refused for their queue's delay
    max_in_flight: int = 2000  # gifts in flight to Redis per worker, whatever their age
    # One user's gifts under way in this worker: past it they are refused rate_limited,
    # so that one token cannot fill the places everyone's gifts need.
    max_in_flight_per_user: int = 40
    retry_after_min_ms: int = 250  # bounds of the retry_after_ms a refusal carries
    retry_after_max_ms: int = 10_000


# A deliverer's round on a stream ends this long before its lease, beyond its last
# attempt's `timeout_s` (its bookkeeping after the attempt: webhooks/deliver.py); and
# a lease must leave a round at least this long to start attempts in.
WEBHOOK_LEASE_SPARE_MS = 100


@dataclass(frozen=True)
class Webhooks:
    """Outgoing webhooks: a streamer's endpoints for their streams' events
    (gifting_server/webhooks/, docs/webhooks.md)."""

    # An endpoint whose oldest undelivered message is older than this is disabled.
    max_age_s: int = 86_400
    # Endpoints may resolve to loopback, link-local or private addresses (tests, a LAN).
    allow_private: bool = False
    timeout_s: float = 10.0  # one attempt: connect, send, read the answer
    retry_base_ms: int = 1000  # the first retry's delay; doubled each failure after
    retry_max_ms: int = 600_000  # the longest delay between two attempts
    poll_ms: int = 500  # how often a worker looks for streams with messages to deliver
    lease_ms: int = 30_000  # a worker delivering a stream holds it this long at most unrenewed
    max_per_streamer: int = 20  # endpoints one streamer may register
    max_body_bytes: int = 65_536  # a larger message is not sent (its attempt says so)
    max_response_bytes: int = 4096  # of the receiver's answer, read at most this much
    attempts_kept: int = 20  # recent attempts shown per endpoint
    batch: int = 100  # messages of one endpoint read from its log at a time


LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Logging:
    """One line per record on stderr (gifting_server/logs.py)."""

    format: str = "text"  # "text" for people, "json" (one object per line) for shipping
    access: bool = True  # a line per HTTP request and per WebSocket connection


@dataclass(frozen=True)
class Server:
    metrics_public: bool = True
    demo_payments: bool = False  # POST /v1/demo/payments: buy coins without a provider


@dataclass(frozen=True)
class Settings:
    redis_url: str | None
    data_dir: Path
    secret: str
    webhook_secret: str
    gifts: tuple[Gift, ...]
    packages: tuple[CoinPackage, ...]
    economy: Economy = field(default_factory=Economy)
    limits: Limits = field(default_factory=Limits)
    history: History = field(default_factory=History)
    websocket: WebSocket = field(default_factory=WebSocket)
    http: Http = field(default_factory=Http)
    transfers: Transfers = field(default_factory=Transfers)
    battles: Battles = field(default_factory=Battles)
    redis: RedisOptions = field(default_factory=RedisOptions)
    messages: Messages = field(default_factory=Messages)
    overload: Overload = field(default_factory=Overload)
    logging: Logging = field(default_factory=Logging)
    webhooks: Webhooks = field(default_factory=Webhooks)
    metrics_public: bool = True
    demo_payments: bool = False
    # `serve --workers N` sets PROMETHEUS_MULTIPROC_DIR: /metrics then sums every worker.
    metrics_multiprocess: bool = False
    # The pid of `serve` for its workers (set by `serve` in their environment): a
    # worker whose parent is no longer that process stops by itself.
    serve_pid: int = 0
    # Gifts in steps, one script per slot (ledger/transfers.py), even on one Redis: a
    # cluster always runs them so; the tests run them on one Redis too.
    gifts_across_slots: bool = False

    @cached_property
    def gifts_by_id(self) -> Mapping[str, Gift]:
        """`gifts` by id, built on first use (every gift looks one up). Derived, never
        stored: a copy made with `dataclasses.replace` builds its own."""
        return MappingProxyType({g.id: g for g in self.gifts})

    def gift(self, gift_id: str) -> Gift | None:
        return self.gifts_by_id.get(gift_id)

    def package(self, package_id: str) -> CoinPackage | None:
        return {p.id: p for p in self.packages}.get(package_id)


def load_settings(env: dict[str, str] | None = None, config_dir: Path | None = None) -> Settings:
    """Build settings from config/*.toml, the optional GIFTING_CONFIG overlay and env vars."""
    env = dict(os.environ if env is None else env)
    config_dir = config_dir or Path(env.get("GIFTING_CONFIG_DIR", DEFAULT_CONFIG_DIR))
    tree: dict[str, Any] = {}
    sources: dict[str, str] = {}  # top-level and "section.key" → the file that set it last
    files = [config_dir / name for name in ("default.toml", "gifts.toml", "packages.toml")]
    if env.get("GIFTING_CONFIG"):
        files.append(Path(env["GIFTING_CONFIG"]))
    for path in files:
        layer = _read_toml(path)
        _merge(tree, layer)
        sources.update({key: str(path) for key in layer})
        for section, table in layer.items():
            if isinstance(table, dict):
                sources.update({f"{section}.{key}": str(path) for key in table})

    data_dir = Path(env.get("GIFTING_DATA_DIR", "data")).resolve()
    for name in ("GIFTING_SECRET", "GIFTING_WEBHOOK_SECRET"):
        if env.get(name) and len(env[name]) < 32:
            raise ConfigError(f"{name} must be at least 32 characters (try: openssl rand -hex 32)")
    server = _parse_section(Server, tree.get("server", {}), "server", sources)
    gifts = _parse_gifts(tree.get("gifts", []), sources.get("gifts", "gifts.toml"))
    limits = _parse_section(Limits, tree.get("limits", {}), "limits", sources)
    _check_catalog(gifts, limits, sources.get("gifts", "gifts.toml"))
    return Settings(
        redis_url=env.get("GIFTING_REDIS_URL") or None,
        data_dir=data_dir,
        secret=env.get("GIFTING_SECRET") or _persistent_secret(data_dir, "token-secret"),
        webhook_secret=env.get("GIFTING_WEBHOOK_SECRET")
        or _persistent_secret(data_dir, "webhook-secret"),
        gifts=gifts,
        packages=_parse_packages(
            tree.get("packages", []), sources.get("packages", "packages.toml")
        ),
        economy=_parse_section(Economy, tree.get("economy", {}), "economy", sources),
        limits=limits,
        history=_parse_section(History, tree.get("history", {}), "history", sources),
        websocket=_parse_section(WebSocket, tree.get("websocket", {}), "websocket", sources),
        http=_parse_section(Http, tree.get("http", {}), "http", sources),
        transfers=_parse_section(Transfers, tree.get("transfers", {}), "transfers", sources),
        battles=_parse_section(Battles, tree.get("battles", {}), "battles", sources),
        redis=_parse_section(RedisOptions, tree.get("redis", {}), "redis", sources),
        messages=_parse_section(Messages, tree.get("messages", {}), "messages", sources),
        overload=_parse_section(Overload, tree.get("overload", {}), "overload", sources),
        logging=_parse_section(Logging, tree.get("logging", {}), "logging", sources),
        webhooks=_parse_section(Webhooks, tree.get("webhooks", {}), "webhooks", sources),
        metrics_public=server.metrics_public,
        # `serve --demo` turns demo payments on for every worker through the environment.
        demo_payments=server.demo_payments or env.get("GIFTING_DEMO_PAYMENTS") == "1",
        metrics_multiprocess=bool(env.get("PROMETHEUS_MULTIPROC_DIR")),
        serve_pid=_pid(env.get("GIFTING_SERVE_PID", "")),
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def _merge(base: dict[str, Any], top: dict[str, Any]) -> None:
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _persistent_secret(data_dir: Path, name: str) -> str:
    """A random secret kept in the data dir, so tokens survive a restart of `make run`."""
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    path.write_text(value)
    path.chmod(0o600)
    return value


def _parse_section(
    cls: type[Any], raw: Any, section: str, sources: dict[str, str] | None = None
) -> Any:
    sources = sources or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"[{section}] must be a table{_in(sources.get(section))}")
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = _in(sources.get(f"{section}.{key}"))
        if not hasattr(defaults, key):
            raise ConfigError(f"[{section}] unknown key {key!r}{where}")
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = tuple(value)
        if type(value) is not expected:
            raise ConfigError(
                f"[{section}] {key} must be {expected.__name__}, got {value!r}{where}"
            )
        values[key] = value
    result = cls(**values)
    for key, value in vars(result).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            _check_range(section, key, value, sources.get(f"{section}.{key}"))
    _check_section(result, section)
    return result


def _check_range(section: str, key: str, value: float, source: str | None) -> None:
    low, high = RANGES.get(section, {}).get(key, DEFAULT_RANGE)
    if not low <= value <= high:  # NaN fails too
        raise ConfigError(f"[{section}] {key} must be in {low}..{high}, got {value!r}{_in(source)}")


def _in(source: str | None) -> str:
    return f" (in {source})" if source else ""


def _check_section(value: Any, section: str) -> None:
    if isinstance(value, Economy) and value.cashout_min_diamonds % value.diamonds_per_unit:
        raise ConfigError("[economy] cashout_min_diamonds must be a multiple of diamonds_per_unit")
    if isinstance(value, Messages) and value.max_length > value.max_length_limit:
        raise ConfigError("[messages] max_length must be at most max_length_limit")
    if isinstance(value, Overload) and value.retry_after_min_ms > value.retry_after_max_ms:
        raise ConfigError("[overload] retry_after_min_ms must be at most retry_after_max_ms")
    if isinstance(value, Webhooks) and value.retry_base_ms > value.retry_max_ms:
        raise ConfigError("[webhooks] retry_base_ms must be at most retry_max_ms")
    if isinstance(value, Webhooks) and (
        value.lease_ms < value.timeout_s * 1000 + 2 * WEBHOOK_LEASE_SPARE_MS
    ):
        # Less, and a round would end before it could start an attempt: nothing is sent.
        raise ConfigError(
            f"[webhooks] lease_ms must be at least timeout_s + {2 * WEBHOOK_LEASE_SPARE_MS} ms"
        )
    if isinstance(value, Battles) and value.min_duration_s > value.max_duration_s:
        raise ConfigError("[battles] min_duration_s must be at most max_duration_s")
    if isinstance(value, Logging) and value.format not in LOG_FORMATS:
        raise ConfigError(f"[logging] format must be one of {', '.join(LOG_FORMATS)}")


def _ident(value: Any, where: str) -> str:
    if not is_id(value):
        raise ConfigError(f"{where}: id {value!r} must be {ID_RULE}")
    return value


def _positive_int(entry: dict[str, Any], key: str, where: str) -> int:
    """1..MAX_INT: coins and prices go through the scripts, whose numbers are doubles."""
    value = entry.get(key)
    if type(value) is not int or value < 1:
        raise ConfigError(f"{where}: {key} must be a positive integer, got {value!r}")
    if value > MAX_INT:
        raise ConfigError(f"{where}: {key} must be in 1..{MAX_INT}, got {value!r}")
    return value


def _check_catalog(gifts: tuple[Gift, ...], limits: Limits, source: str) -> None:
    """The biggest send, a gift's coins times [limits] max_gift_count, must stay exact
    in the gift script; beyond 2^53 its sums round, and from 1e17 on Redis refuses the
    number it formats (1e+17) in the middle of the script, after its first write."""
    for gift in gifts:
        if gift.coins * limits.max_gift_count > MAX_INT:
            raise ConfigError(
                f"{source}: gift {gift.id!r}: coins x [limits] max_gift_count must be at"
                f" most {MAX_INT}, got {gift.coins} x {limits.max_gift_count}"
            )


def _parse_gifts(raw: Any, source: str) -> tuple[Gift, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: the catalog needs at least one [[gifts]] entry")
    gifts: list[Gift] = []
    for i, entry in enumerate(raw):
        where = f"{source} [[gifts]] #{i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a table with id, name, coins, tier")
        gift_id = _ident(entry.get("id"), where)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where} ({gift_id}): name must be a non-empty string")
        tier = _positive_int(entry, "tier", where)
        if tier > 4:
            raise ConfigError(f"{where} ({gift_id}): tier must be 1..4")
        emoji, svg = entry.get("emoji", ""), entry.get("svg", "")
        if not (emoji or svg):
            raise ConfigError(f"{where} ({gift_id}): needs an emoji or an inline svg")
        gifts.append(
            Gift(gift_id, name, _positive_int(entry, "coins", where), tier, str(emoji), str(svg))
        )
    _unique([g.id for g in gifts], f"{source}: gift")
    return tuple(gifts)


def _parse_packages(raw: Any, source: str) -> tuple[CoinPackage, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: needs at least one [[packages]] entry")
    packages = []
    for i, entry in enumerate(raw):
        where = f"{source} [[packages]] #{i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a table with id, coins, price")
        packages.append(
            CoinPackage(
                _ident(entry.get("id"), where),
                _positive_int(entry, "coins", where),
                _positive_int(entry, "price", where),
            )
        )
    _unique([p.id for p in packages], f"{source}: package")
    return tuple(packages)


def _unique(ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            raise ConfigError(f"{what} id {item!r} appears twice")
        seen.add(item)


def _pid(text: str) -> int:
    """A process id from the environment; 0 (none) for anything else."""
    return int(text) if text.isascii() and text.isdigit() else 0
