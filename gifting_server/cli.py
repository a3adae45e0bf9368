"""The command line: serve, token, demo, reconcile, cashout-complete, load-setup."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence

from gifting_server import load_setup
from gifting_server.auth import Role, issue_token
from gifting_server.config import ConfigError, Settings, load_settings
from gifting_server.embedded_redis import EmbeddedRedis, EmbeddedRedisError, Supervisor

log = logging.getLogger("gifting_server")
MAX_TOKEN_TTL_S = 10 * 365 * 86_400  # ten years


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-5s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gifting-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--demo", action="store_true", help="seed demo data and print URLs")
    serve.add_argument("--log-level", default="info")

    token = sub.add_parser("token", help="print a signed token")
    token.add_argument("user")
    token.add_argument("--role", choices=[r.value for r in Role], default="viewer")
    token.add_argument("--stream", help="the stream an overlay token is for")
    token.add_argument("--name", help="display name (default: the user id)")
    token.add_argument("--adult", action=argparse.BooleanOptionalAction, default=True)
    token.add_argument("--ttl", type=int, default=86_400, help="seconds until it expires")

    demo = sub.add_parser("demo", help="seed a live demo stream, streamer and funded viewers")
    demo.add_argument("--base-url", default="http://127.0.0.1:8000")

    sub.add_parser("reconcile", help="audit the ledger; exit 0 when every invariant holds")

    complete = sub.add_parser(
        "cashout-complete", help="mark a pending cash-out paid, or failed (returns its diamonds)"
    )
    complete.add_argument("cashout_id")
    complete.add_argument("--status", choices=["paid", "failed"], required=True)
    load_setup.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        settings = load_settings()
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return serve(settings, args)
        if args.command == "token":
            if not 1 <= args.ttl <= MAX_TOKEN_TTL_S:  # exp stays exact in JavaScript too
                raise ValueError(f"--ttl must be 1..{MAX_TOKEN_TTL_S} seconds, got {args.ttl}")
            print(
                issue_token(
                    settings.secret,
                    args.user,
                    Role(args.role),
                    name=args.name,
                    adult=args.adult,
                    stream_id=args.stream,
                    ttl_s=args.ttl,
                )
            )
            return 0
        if args.command == "demo":
            with redis_for(settings) as url:
                return run_demo(settings, url, args.base_url)
        if args.command == "reconcile":
            from gifting_server.ledger.reconcile import reconcile_main

            with redis_for(settings) as url:
                return reconcile_main(settings, url)
        if args.command == "cashout-complete":
            with redis_for(settings) as url:
                return complete_cashout(settings, url, args.cashout_id, args.status)
        if args.command == "load-setup":
            return load_setup.main(settings, args)
    except (EmbeddedRedisError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 2


class redis_for:
    """The configured Redis, or the embedded one in the data dir (started if needed)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedRedis | None = None

    def __enter__(self) -> str:
        if self.settings.redis_url:
            return self.settings.redis_url
        candidate = EmbeddedRedis(self.settings.data_dir)
        if candidate.socket.exists() and candidate._answers():
            return candidate.url  # a running `serve` owns it
        self.embedded = candidate
        return candidate.start()

    def __exit__(self, *exc: object) -> None:
        if self.embedded:
            self.embedded.stop()


def run_demo(settings: Settings, redis_url: str, base_url: str) -> int:
    from gifting_server.demo import seed_demo

    print(asyncio.run(seed_demo(settings, redis_url, base_url)))
    return 0


def complete_cashout(settings: Settings, redis_url: str, cashout_id: str, status: str) -> int:
    """Print the cash-out as completed; 1 with the error when it is refused."""
    import orjson

    from gifting_server.errors import GiftingError
    from gifting_server.ledger import cashouts
    from gifting_server.ledger.store import Store, connect

    async def run() -> dict[str, object]:
        store = Store(await connect(redis_url, settings.limits.request_timeout_s), settings)
        try:
            return await cashouts.complete(store, cashout_id, status)
        finally:
            await store.close()

    try:
        print(orjson.dumps(asyncio.run(run())).decode())
    except GiftingError as e:
        print(f"error: {e.code.code}: {e.message}", file=sys.stderr)
        return 1
    return 0


def serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    embedded: EmbeddedRedis | None = None
    supervisor: Supervisor | None = None
    if args.demo:
        # Every worker reads its settings from the environment: demo payments for all.
        os.environ["GIFTING_DEMO_PAYMENTS"] = "1"
        settings = load_settings()
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir)
        os.environ["GIFTING_REDIS_URL"] = embedded.start()
        settings = load_settings()
        # This process alone owns the embedded Redis, however many workers uvicorn
        # starts: it restarts Redis when it dies, the workers read its status file.
        supervisor = Supervisor(embedded)
        supervisor.start()
    # Workers stop by themselves when this process is gone (app._stop_when_orphaned).
    os.environ["GIFTING_SERVE_PID"] = str(os.getpid())
    if args.workers > 1:
        # Each worker writes its metrics here; /metrics on any worker sums them all.
        metrics_dir = settings.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        if args.demo:
            base = f"http://{args.host}:{args.port}"
            assert settings.redis_url
            run_demo(settings, settings.redis_url, base)
        # uvicorn re-raises SIGTERM after its graceful shutdown; exit through `finally`
        # instead, so that the embedded Redis is shut down cleanly too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        log.info("serving on http://%s:%s with %d worker(s)", args.host, args.port, args.workers)
        uvicorn.run(
            "gifting_server.app:create_app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            loop="uvloop",
            http="gifting_server.api.http_protocol:HttpProtocol",
            ws="gifting_server.hub.connection:HubConnection",
            log_level=args.log_level,
            access_log=False,
        )
    finally:
        if supervisor:
            supervisor.stop()
        if embedded:
            embedded.stop()
    return 0
