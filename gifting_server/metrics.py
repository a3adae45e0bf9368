"""Prometheus metrics. With several workers, `serve` sets PROMETHEUS_MULTIPROC_DIR
so that /metrics sums every worker's figures, whichever worker answers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gifting_server.events import ts_of

REQUESTS = Counter("gifting_http_requests_total", "HTTP requests answered", ["method", "status"])
GIFTS = Counter(
    "gifting_gifts_total",
    "Gift sends by path (http, ws) and outcome (ok, or the error code of the refusal)",
    ["path", "outcome"],
)
GIFT_LATENCY = Histogram(
    "gifting_gift_ack_seconds",
    "Time from receiving a gift to acknowledging it",
    ["path"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
GIFTS_REFUSED_OVERLOADED = Counter(
    "gifting_gifts_refused_overloaded_total",
    "Gifts refused before reaching Redis ([overload]): with service_unavailable when the"
    " worker (on a cluster, a master the gift has a step on) was past its ceiling, reason"
    " queue_delay (a standing queue longer than queue_target_ms) or in_flight"
    " (max_in_flight reached); with rate_limited, reason user_in_flight, when the sender"
    " had max_in_flight_per_user gifts under way in the worker",
    ["reason"],
)
GIFT_BATCHES = Counter(
    "gifting_gift_batches_total",
    "Script calls that carried gifts on a single Redis (ledger/gift_batch.py)",
)
GIFTS_BATCHED = Counter(
    "gifting_gifts_batched_total",
    "Gifts those calls carried: over gifting_gift_batches_total, the mean batch size",
)
TRANSFER_CALLS = Counter(
    "gifting_transfer_credit_calls_total",
    "Script calls that credited gifts across slots, by step (ledger/transfer_batch.py)",
    ["step"],
)
TRANSFERS_BATCHED = Counter(
    "gifting_transfers_batched_total",
    "Transfers those calls carried: over gifting_transfer_credit_calls_total, the mean"
    " batch size of the step",
    ["step"],
)
PAYMENTS = Counter("gifting_payments_total", "Payment webhook events", ["kind", "replayed"])
REPLICA_SHORTFALLS = Counter(
    "gifting_replica_ack_shortfalls_total",
    "Script calls refused with service_unavailable because fewer replicas than"
    " [redis] replicas_acked confirmed their write within replicas_timeout_ms",
)

LOOP_LAG = Gauge(
    "gifting_event_loop_lag_seconds",
    "How late the worker's event loop last ran a timer that was due (gifting_server/"
    "loop_lag.py): the wait of every gift before and after its calls to Redis",
    multiprocess_mode="max",
)
CONNECTIONS = Gauge(
    "gifting_ws_connections", "Open WebSocket connections", multiprocess_mode="livesum"
)
SUBSCRIPTIONS = Gauge(
    "gifting_ws_subscriptions",
    "Stream subscriptions of open connections",
    multiprocess_mode="livesum",
)
FRAMES = Counter("gifting_ws_frames_sent_total", "WebSocket frames written")
EVENTS_DELIVERED = Counter("gifting_ws_events_delivered_total", "Events written, per connection")
DROPS = Counter("gifting_ws_drops_total", "Connections dropped by the server", ["reason"])
DELIVERY_LATENCY = Histogram(
    "gifting_event_delivery_seconds",
    "From the event's creation in Redis to its frame being written to the sockets",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)


# Any other method is counted as "other": a label value per made-up method would let
# a client grow the metrics without bound.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def count_request(method: str, status: int) -> None:
    REQUESTS.labels(method=method if method in METHODS else "other", status=str(status)).inc()


# Each gift and each refusal counts: `labels()` costs more than the count itself (a
# lock and a dict built per call), so each pair's child is looked up once.
_GIFT_COUNTERS: dict[tuple[str, str], Any] = {}
_GIFT_LATENCIES: dict[str, Histogram] = {}


def gift_latency(path: str) -> Histogram:
    """GIFT_LATENCY's child for `path`, looked up once: `labels()` takes a lock and
    builds its key on every call, and the WebSocket edge asks per gift."""
    child = _GIFT_LATENCIES.get(path)
    if child is None:
        child = _GIFT_LATENCIES[path] = GIFT_LATENCY.labels(path=path)
    return child


def count_gift(path: str, outcome: str) -> None:
    """`outcome` is "ok" or an ErrorCode's code: a closed set of label values."""
    counter = _GIFT_COUNTERS.get((path, outcome))
    if counter is None:
        counter = _GIFT_COUNTERS[path, outcome] = GIFTS.labels(path=path, outcome=outcome)
    counter.inc()


def observe_delivery(events: list[bytes], now_ms: float) -> None:
    for raw in events:
        try:
            ts = ts_of(raw)
        except ValueError:
            continue  # not an event: nothing to time
        DELIVERY_LATENCY.observe(max(0.0, now_ms - ts) / 1000)


def embedded_redis(up: bool, restarts: int) -> list[Metric]:
    """The supervisor of `serve` keeps these in its status file; any worker reports them."""
    return [
        CounterMetricFamily(
            "gifting_embedded_redis_restarts",
            "Restarts of the embedded redis-server by `serve` after it exited",
            value=restarts,
        ),
        GaugeMetricFamily(
            "gifting_embedded_redis_up",
            "1 while the embedded redis-server runs, 0 while `serve` restarts it",
            value=int(up),
        ),
    ]


class _Fixed:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def exposition(extra: list[Metric] | None = None, *, all_workers: bool = False) -> bytes:
    """The Prometheus text of this worker, or of all workers in multi-process mode
    (`Settings.metrics_multiprocess`), followed by `extra` families."""
    if all_workers:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
    else:
        text = generate_latest()
    if extra:
        fixed = CollectorRegistry(auto_describe=False)
        fixed.register(_Fixed(extra))
        text += generate_latest(fixed)
    return text


SPEECH_RENDERS = Counter(
    "gifting_speech_renders_total",
    "Gift messages rendered to speech by espeak-ng (a cached answer is not counted)",
    ["outcome"],
)

WEBHOOK_DELIVERIES = Counter(
    "gifting_webhook_deliveries_total",
    "Outgoing webhook delivery attempts by outcome: ok (a 2xx answer), failed (retried"
    " later), test_ok / test_failed (POST /v1/webhooks/{id}/test)",
    ["outcome"],
)
WEBHOOK_BACKLOG = Gauge(
    "gifting_webhook_backlog",
    "Messages in the delivery logs of the streams this worker delivers that some enabled"
    " endpoint still waits for (summed over workers)",
    multiprocess_mode="livesum",
)
WEBHOOKS_DISABLED = Counter(
    "gifting_webhooks_disabled_total",
    "Endpoints disabled because their oldest undelivered message passed [webhooks] max_age_s",
)
