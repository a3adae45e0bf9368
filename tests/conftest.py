"""Fixtures: a real redis-server started by the tests, the ledger over it, and a
real uvicorn server on a free port for HTTP tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import os
import socket
import threading
import warnings
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
from gifting_server.ledger.store import Store, connect
from gifting_server.local_cluster import LocalCluster
from tests import topology
from tests.redis_process import RedisProcess

SECRET = "test-token-secret-0123456789abcdef0123456789"
WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef0123456"


# Short, so that a killed master's replica takes over within a few seconds.
CLUSTER_NODE_TIMEOUT_MS = 1000


def _one_tls_context(init: Callable[..., None]) -> Callable[..., None]:
    """An httpx client made without `verify` gets the one context made here. httpx
    makes a TLS context for every client and loads the certificate authorities into
    it: 85 ms of CPU a client on a 2 GHz core, paid by every test that opens a client
    to a server it then speaks plain HTTP to (tests/api/test_http_validation.py's 347
    cases on 4 workers: 48 s before, 30 s after)."""

    @functools.wraps(init)
    def made_with_the_one_context(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("verify", TLS_CONTEXT)
        init(self, *args, **kwargs)

    return made_with_the_one_context


TLS_CONTEXT = httpx.create_ssl_context()
httpx.Client.__init__ = _one_tls_context(httpx.Client.__init__)  # type: ignore[method-assign]
httpx.AsyncClient.__init__ = _one_tls_context(httpx.AsyncClient.__init__)  # type: ignore[method-assign]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis-topology",
        choices=(topology.SINGLE, topology.CLUSTER),
        default=None,
        help=f"the Redis the shared fixtures run on (default: ${topology.TOPOLOGY_ENV} or single)",
    )


def pytest_configure(config: pytest.Config) -> None:
    chosen = config.getoption("--redis-topology", default=None)
    if chosen:
        # The env var, not only the option: servers started as processes inherit it.
        os.environ[topology.TOPOLOGY_ENV] = chosen
    topology.chosen()  # a bad value stops the run here
    config.addinivalue_line("markers", "cluster: needs the local Redis Cluster")
    config.addinivalue_line("markers", "slow: takes tens of seconds; scheduled first")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first: the property tests, the fuzzers and those marked
    `slow`. The parallel workers take tests in this order, and a test of a minute
    taken last would run alone at the end while the other workers wait."""
    items.sort(key=lambda item: 0 if _long(item) else 1)  # stable: the rest keep their order


def _long(item: pytest.Item) -> bool:
    function = getattr(item, "obj", None)
    return item.get_closest_marker("slow") is not None or bool(
        getattr(function, "is_hypothesis_test", False)
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Between tests, collect what the last one left and freeze what lives on.

    The servers under test run in this process: a full collection of the cyclic
    garbage collector stops every thread while it walks every object, and a long run
    holds millions (measured: 5.2 million after the cluster suites, full collections
    of up to 4.3 s). Such a pause froze the servers of whatever test it fell in, past
    the Redis timeouts. Frozen objects are not walked again; the collection here walks
    only what the last test made, while no server of this test runs yet.
    An unclosed socket found here is the last test's (the HTTP fuzzer's clients leave
    theirs to the collector), not this one's: its ResourceWarning is not this test's
    to fail on, as it was not when the collector ran at some later moment."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    gc.freeze()


def pytest_report_header(config: pytest.Config) -> str:
    return f"redis topology: {topology.chosen()} (${topology.TOPOLOGY_ENV})"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One local Redis Cluster (3 masters, 3 replicas) for the session."""
    cluster = LocalCluster(
        tmp_path_factory.mktemp("cluster"), node_timeout_ms=CLUSTER_NODE_TIMEOUT_MS
    )
    with cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> str:
    """A URL of one node of the session's cluster, every node running and every master
    flushed."""
    topology.ClusterFaults(redis_cluster).heal()
    for node in redis_cluster.nodes():
        if node.role == "master":
            client = redis.Redis(host=node.host, port=node.port, driver_info=None)
            client.flushall()
            client.close()
    return redis_cluster.urls[0]


@pytest.fixture(scope="session")
def session_redis_url(request: pytest.FixtureRequest) -> str:
    """The URL of the session's Redis of the chosen topology, not flushed: for
    module-scoped fixtures. A test takes `redis_url`."""
    if topology.on_cluster():
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        return cluster.urls[0]
    server: RedisProcess = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """A flushed database on the session's Redis: the single test Redis, or with
    GIFTING_TEST_TOPOLOGY=cluster a node of the local cluster (tests/topology.py)."""
    if topology.on_cluster():
        return str(request.getfixturevalue("cluster_url"))
    redis_server: RedisProcess = request.getfixturevalue("redis_server")
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
    client = await connect(settings.redis_url, settings.limits.request_timeout_s)
    store = Store(client, settings)
    yield store
    await store.close()


class _PromptServer(uvicorn.Server):
    """uvicorn's server without its two fixed waits on the way out, which hundreds of
    tests each paid when stopping a server (measured: a stop took ~200 ms, now ~20 ms):
    its main loop looks at `should_exit` only once every 0.1 s, and its shutdown
    sleeps 0.1 s for open connections to close even when there are none. Shutting
    down with connections still open is uvicorn's own, unchanged; so is the rest."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864_000  # as uvicorn's: one day of 0.1 s ticks
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.server_state.connections:
            await super().shutdown(sockets)  # uvicorn's: it lets them finish first
            return
        # No connection left to let finish: uvicorn's steps without its fixed 0.1 s
        # sleep, which only gives open connections the time to close.
        for listening in self.servers:
            listening.close()
        for sock in sockets or []:
            sock.close()
        try:
            await asyncio.wait_for(
                self._wait_tasks_to_complete(), timeout=self.config.timeout_graceful_shutdown
            )
        except TimeoutError:
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()

    def stop(self) -> None:
        """From another thread: exit now rather than at the next 0.1 s tick."""
        self.should_exit = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._stop.set)


class ServerThread:
    """uvicorn serving the app on a free port in a thread: real sockets, real HTTP."""

    def __init__(self, settings: Settings, port: int = 0) -> None:
        # Bound here and handed to uvicorn, not a free port picked and bound later:
        # with tests running in parallel another process could take it in between.
        # `port`: a given one (a server restarted where the stopped one listened).
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = int(self.sock.getsockname()[1])
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
        self.server = _PromptServer(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

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
        self.server.stop()
        self.thread.join(timeout=10)
        self.sock.close()


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
