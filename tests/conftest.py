"""Fixtures: a real redis-server started by the tests, the ledger over it, and a
real uvicorn server on a free port for HTTP tests."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn

from gifting_server.api.http_protocol import HttpProtocol
from gifting_server.app import create_app
from gifting_server.config import Settings, load_settings
from gifting_server.hub.connection import HubConnection
from gifting_server.ledger.store import Store, connect_single
from tests.redis_process import RedisProcess, free_port

SECRET = "test-token-secret-0123456789abcdef0123456789"
WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef0123456"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """A flushed database on the shared test Redis."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


def make_settings(redis_url: str, data_dir: Path, **sections: dict[str, Any]) -> Settings:
    """Settings from config/ with test secrets; `economy={...}` etc. override fields."""
    settings = load_settings(
        {
            "GIFTING_REDIS_URL": redis_url,
            "GIFTING_DATA_DIR": str(data_dir),
            "GIFTING_SECRET": SECRET,
            "GIFTING_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
    )
    changes = {
        name: dataclasses.replace(getattr(settings, name), **fields)
        for name, fields in sections.items()
    }
    return dataclasses.replace(settings, **changes)


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(redis_url, tmp_path)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    assert settings.redis_url
    client = connect_single(settings.redis_url, settings.limits.request_timeout_s)
    store = Store(client, settings)
    yield store
    await store.close()


class ServerThread:
    """uvicorn serving the app on a free port in a thread: real sockets, real HTTP."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            loop="asyncio",
            http=HttpProtocol,
            ws=HubConnection,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("server thread died during start")
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
async def http(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


@contextlib.contextmanager
def server_factory(
    tmp_path: Path, defaults: dict[str, dict[str, Any]]
) -> Iterator[Callable[..., ServerThread]]:
    """`start(redis_url, limits={...}, ...)` → a running server whose settings are the
    given sections merged over `defaults`. Every server must have stopped at the end:
    a shutdown that hangs is a bug."""
    servers: list[ServerThread] = []
    with contextlib.ExitStack() as running:

        def start(redis_url: str, **sections: dict[str, Any]) -> ServerThread:
            merged = {name: dict(fields) for name, fields in defaults.items()}
            for name, fields in sections.items():
                merged.setdefault(name, {}).update(fields)
            settings = make_settings(redis_url, tmp_path, **merged)
            servers.append(running.enter_context(ServerThread(settings)))
            return servers[-1]

        yield start
    assert not [s for s in servers if s.thread.is_alive()], "a server did not stop within 10 s"
