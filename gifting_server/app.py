"""create_app(settings): the routes and the lifespan (Redis client, scripts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gifting_server import collector, logs, metrics
from gifting_server.access_log import AccessLog
from gifting_server.api import (
    battles_http,
    demo,
    http,
    pages,
    speech,
    streamer_http,
    studio,
    webhooks_http,
    ws,
)
from gifting_server.api.http_protocol import PendingRequests
from gifting_server.api.openapi import openapi_document
from gifting_server.config import Settings, load_settings
from gifting_server.embedded_redis import read_status
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.hub import heartbeat
from gifting_server.hub.broker import Broker
from gifting_server.hub.cluster_broker import ClusterBroker
from gifting_server.hub.hub import Hub
from gifting_server.hub.redis_broker import RedisBroker
from gifting_server.hub.redis_history import RedisHistory
from gifting_server.ledger import keys, streaks, stream_state, transfers
from gifting_server.ledger.battle_ticker import BattleTicker
from gifting_server.ledger.presence import Presence
from gifting_server.ledger.store import (
    RedisClient,
    Store,
    connect,
    connect_cluster,
    connect_single,
    masters_short_of_replicas,
)
from gifting_server.scheduler import Scheduler
from gifting_server.speech import Speech
from gifting_server.tasks import for_each_stream
from gifting_server.webhooks.deliver import Deliverer

log = logging.getLogger("gifting_server")


async def on_gifting_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GiftingError)
    return http.json_response(exc.to_dict(), status=exc.code.http_status, headers=exc.headers())


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
        exc.status_code, ErrorCode.INVALID_REQUEST
    )
    error = GiftingError(code, str(exc.detail))
    return http.json_response(error.to_dict(), status=exc.status_code)


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    error = GiftingError(ErrorCode.INTERNAL_ERROR, "unexpected server error; it was logged")
    return http.json_response(error.to_dict(), status=500)


class CountRequests:
    """Counts every HTTP request answered, by method and status. It sits inside
    Starlette's outermost error handler, so an exception that escaped every handler
    is counted here as the 500 that handler answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            metrics.count_request(scope["method"], status)


async def metrics_endpoint(request: Request) -> Response:
    settings: Settings = request.app.state.store.settings
    embedded = read_status(settings.data_dir, settings.redis_url)
    extra = metrics.embedded_redis(embedded.up, embedded.restarts) if embedded else None
    text = metrics.exposition(extra, all_workers=settings.metrics_multiprocess)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


async def openapi_endpoint(request: Request) -> Response:
    return http.json_response(openapi_document(request.app.state.store.settings))


def periodic_work(hub: Hub, store: Store) -> Scheduler:
    """Each worker's periodic work for the streams it serves. Every publication is an
    atomic script, so when several workers do it for one stream each streak still
    ends once and each change is published once."""
    presence = Presence(store)

    async def publish_top_gifters() -> None:
        await for_each_stream(
            list(hub.rooms), lambda stream_id: stream_state.publish_top_gifters(store, stream_id)
        )

    async def ping() -> None:
        heartbeat.ping_all(list(hub.connections))

    scheduler = Scheduler(quiet=(GiftingError,))
    scheduler.every(
        streaks.SWEEP_EVERY_S, "closing streaks", lambda: streaks.close_streaks(store, hub.served())
    )
    scheduler.every(streaks.SWEEP_EVERY_S, "viewer counts", lambda: presence.report(hub.served()))
    scheduler.every(stream_state.PUBLISH_EVERY_S, "top gifters", publish_top_gifters)
    scheduler.every(hub.settings.websocket.ping_interval_s, "heartbeat", ping)
    ticker = BattleTicker(store)
    scheduler.every(store.settings.battles.tick_ms / 1000, "battles", ticker.tick)
    if store.gifts_across_slots:
        relay = transfers.TransferRelay(store, start=secrets.randbelow(keys.SLOTS))
        every_s = store.settings.transfers.relay_every_s
        scheduler.every(every_s, "finishing gift transfers", relay.pass_once)
    return scheduler


async def _warn_if_replicas_short(store: Store) -> None:
    """`[redis] replicas_acked` above the replicas a master has refuses every money
    write on it: say so at start, not only through 503s."""
    try:
        short = await masters_short_of_replicas(store)
    except (RedisError, RedisClusterException, OSError):
        return  # Redis not up yet: its own errors say so
    for master in short:
        log.warning(
            "[redis] replicas_acked = %d, but a master has fewer replicas (%s): its money "
            "writes will be refused with service_unavailable until it has them",
            store.settings.redis.replicas_acked,
            master,
        )


def create_app(settings: Settings) -> Starlette:
    """The ASGI app; its lifespan connects to `settings.redis_url` and starts the hub.

    Serve it with `http=HttpProtocol, ws=HubConnection` (as `gifting-server serve`
    does) so that /v1/ws is handled by the hub and slow requests are cut.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if not settings.redis_url:
            raise RuntimeError("create_app needs settings.redis_url (the CLI sets it)")
        timeout = settings.limits.request_timeout_s
        redis = await connect(settings.redis_url, timeout)
        app.state.store = Store(redis, settings)
        await _warn_if_replicas_short(app.state.store)
        # The hub's own client (raw bytes): on a cluster, sharded pub/sub and history
        # reads on the master of each stream's slot (docs/scaling.md).
        hub_redis: RedisClient
        broker: Broker
        if isinstance(redis, RedisCluster):
            hub_redis = await connect_cluster(settings.redis_url, timeout, decode_responses=False)
            broker = ClusterBroker(hub_redis)
        else:
            hub_redis = connect_single(settings.redis_url, timeout, decode_responses=False)
            broker = RedisBroker(hub_redis)
        hub = Hub(settings, broker, RedisHistory(hub_redis))
        scheduler = periodic_work(hub, app.state.store)
        # Its own task, not a scheduler job: an endpoint slow to answer delays nothing else.
        deliverer = Deliverer(app.state.store)
        hub.start()
        scheduler.start()
        deliverer.start()
        app.state.hub = hub
        app.state.deliverer = deliverer
        app.state.speech = Speech.installed()
        if app.state.speech.engine is None:
            log.warning("espeak-ng is not installed: gift messages are not read aloud (503)")
        orphaned = _stop_when_orphaned(settings.serve_pid)
        try:
            # uvicorn hands this state to HubConnection, which serves /v1/ws, and to
            # HttpProtocol, which bounds the connections still sending a request.
            yield {
                "hub": hub,
                "open_session": ws.session_opener(hub, app.state.store),
                "pending_requests": PendingRequests(settings.http),
            }
        finally:
            if orphaned is not None:
                orphaned.cancel()
            await deliverer.stop()
            await scheduler.stop()
            await hub.stop()
            await hub_redis.aclose()
            await app.state.store.close()

    routes = [
        *http.routes,
        *studio.routes,
        *speech.routes,
        *streamer_http.routes,
        *webhooks_http.routes,
        *battles_http.routes,
        *pages.routes,
        Route("/openapi.json", openapi_endpoint),
    ]
    if settings.demo_payments:
        routes += demo.routes
    if settings.metrics_public:
        routes.append(Route("/metrics", metrics_endpoint))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(AccessLog, enabled=settings.logging.access),
            Middleware(CountRequests),
        ],
        exception_handlers={
            GiftingError: on_gifting_error,
            HTTPException: on_http_error,
            Exception: on_unexpected_error,
        },
    )
    return app


ORPHAN_CHECK_S = 0.5


def _stop_when_orphaned(serve_pid: int) -> asyncio.Task[None] | None:
    """A worker of `serve --workers N` stops by itself when `serve` is gone: uvicorn's
    workers outlive a kill -9 of their parent, and would go on serving unsupervised,
    holding the port and the embedded Redis the next `serve` needs."""
    if not serve_pid or serve_pid == os.getpid():
        return None  # not a worker process of `serve`

    async def watch() -> None:
        while os.getppid() == serve_pid:
            await asyncio.sleep(ORPHAN_CHECK_S)
        log.error("serve (pid %d) is gone: this worker stops", serve_pid)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown

    return asyncio.get_running_loop().create_task(watch())


def create_app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` and for each worker of `serve --workers N`."""
    logs.skip_unused_record_attributes()  # uvicorn configured this process's logging
    app = create_app(load_settings())
    collector.settle()  # a served worker's process only: not the tests' own process
    return app
