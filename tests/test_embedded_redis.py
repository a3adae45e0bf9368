"""`serve` supervises its embedded Redis: kill -9 it and `serve` restarts it from its AOF,
every acknowledged gift is still there, /readyz says why it was down and /metrics
counts the restart, with one worker or several."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from gifting_server.embedded_redis import (
    STATUS_FILE,
    EmbeddedRedis,
    RedisStatus,
    exit_reason,
    read_status,
)
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger.store import connect_single, guarded
from tests.conftest import ServerThread, make_settings
from tests.factories import auth
from tests.redis_process import free_port
from tests.test_cli import Served, alive, children_named

ALICE = auth("alice", name="Alice")
TIMEOUT_S = 0.5


@pytest.fixture
def served() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for server in started:
        server.cleanup()  # whatever is still running, the restarted redis-server included


def metric(client: httpx.Client, name: str) -> float:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not in /metrics")


def gift(client: httpx.Client, key: str) -> httpx.Response:
    body = {"gift_id": "rose", "count": 3, "idempotency_key": key}
    return client.post("/v1/streams/demo/gifts", json=body, headers=ALICE)


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_restarts_its_embedded_redis_after_kill_9_losing_no_acknowledged_gift(
    tmp_path: Path, served: list[Served], workers: int
) -> None:
    server = Served(tmp_path / "data", workers=workers)
    served.append(server)
    server.start()
    assert server.process is not None and server.redis_pid is not None
    with httpx.Client(base_url=server.url, timeout=10) as client:
        first = gift(client, "before-the-kill")
        assert first.status_code == 200, first.text
        assert metric(client, "gifting_embedded_redis_restarts_total") == 0
        assert metric(client, "gifting_embedded_redis_up") == 1

        killed = server.redis_pid
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            assert server.process.poll() is None, server.output()
            restarted = [
                p for p in children_named(server.process.pid, "redis-server") if p != killed
            ]
            if restarted and client.get("/readyz").status_code == 200:
                break
            assert time.monotonic() < deadline, f"/readyz not 200 again:\n{server.output()}"
            time.sleep(0.05)
        server.redis_pid = restarted[0]

        ready = client.get("/readyz").json()
        assert ready == {
            "status": "ready",
            "embedded_redis": {"restarts": 1, "last_exit": "killed by SIGKILL"},
        }
        # the acknowledged gift came back from the AOF: balance, and its idempotency record
        assert client.get("/v1/wallet", headers=ALICE).json()["coins"] == first.json()["coins"]
        retried = gift(client, "before-the-kill")
        assert (retried.status_code, retried.json()) == (200, first.json())
        after = gift(client, "after-the-restart")
        assert after.status_code == 200, after.text
        assert after.json()["coins"] == first.json()["coins"] - 3
        assert after.json()["event_id"] > first.json()["event_id"]
        # the supervisor marks Redis up just after it answers: wait for that, not longer
        deadline = time.monotonic() + 10
        while metric(client, "gifting_embedded_redis_up") != 1:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        for _ in range(2 * workers):  # whichever worker answers
            assert metric(client, "gifting_embedded_redis_restarts_total") == 1
            assert metric(client, "gifting_embedded_redis_up") == 1

    output = server.output()
    assert "embedded Redis exited (killed by SIGKILL); restarting it from its AOF" in output
    assert "embedded Redis restarted (restart 1)" in output
    assert server.terminate() in (0, -signal.SIGTERM), server.output()
    assert not alive(server.redis_pid), "serve exited but left its restarted redis-server running"
    assert not (server.data_dir / STATUS_FILE).exists()


def test_readyz_and_metrics_say_why_while_the_embedded_redis_is_down(tmp_path: Path) -> None:
    """A worker reads the supervisor's status file: while Redis is down, /readyz is 503
    and says that it is being restarted, and gifting_embedded_redis_up is 0."""
    dead_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = make_settings(dead_url, tmp_path)
    down = RedisStatus(dead_url, up=False, restarts=2, last_exit=exit_reason(-signal.SIGKILL))
    (tmp_path / STATUS_FILE).write_text(json.dumps(down.__dict__))
    assert read_status(tmp_path, dead_url) == down
    assert read_status(tmp_path, "redis://elsewhere:6379/0") is None  # not ours
    with (
        ServerThread(settings) as running,
        httpx.Client(base_url=running.url, timeout=10) as client,
    ):
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "service_unavailable"
        assert "embedded Redis exited (killed by SIGKILL)" in ready.json()["error"]["message"]
        assert "being restarted" in ready.json()["error"]["message"]
        assert client.get("/healthz").status_code == 200
        assert metric(client, "gifting_embedded_redis_up") == 0
        assert metric(client, "gifting_embedded_redis_restarts_total") == 2


def test_serve_after_a_kill_9_of_serve_takes_over_the_redis_it_left_running(
    tmp_path: Path, served: list[Served]
) -> None:
    """Redis runs in a session of its own, so a `kill -9` of `serve` (or the OOM
    killer) leaves it running: the next `serve` on that data dir shuts the orphan down
    cleanly and starts its own, every acknowledged gift still there, instead of
    refusing to start until someone finds the orphan's pid."""
    first = Served(tmp_path / "data")
    served.append(first)
    first.start()
    assert first.process is not None and first.redis_pid is not None
    with httpx.Client(base_url=first.url, timeout=10) as client:
        sent = gift(client, "before-serve-died")
        assert sent.status_code == 200, sent.text
    first.process.kill()
    first.process.wait()
    orphan = first.redis_pid
    assert alive(orphan)

    second = Served(tmp_path / "data")
    served.append(second)
    second.start()
    deadline = time.monotonic() + 10
    while alive(orphan):  # SHUTDOWN fsyncs the AOF; its parent (init) reaps it
        assert time.monotonic() < deadline, "the orphaned redis-server still runs"
        time.sleep(0.02)
    assert second.redis_pid != orphan
    with httpx.Client(base_url=second.url, timeout=10) as client:
        coins = client.get("/v1/wallet", headers=ALICE).json()["coins"]
        assert coins == sent.json()["coins"]
        assert gift(client, "before-serve-died").json() == sent.json()
    assert "left running by a gifting-server that died" in second.output()
    assert second.terminate() in (0, -signal.SIGTERM), second.output()
    assert not alive(second.redis_pid)


def test_a_status_file_that_cannot_be_written_does_not_stop_the_restarts(
    tmp_path: Path, served: list[Served]
) -> None:
    """The status file is for /readyz and /metrics only: when it cannot be written (a
    full disk, say, which may be what killed Redis), Redis is restarted all the same."""
    server = Served(tmp_path / "data")
    served.append(server)
    server.start()
    assert server.process is not None and server.redis_pid is not None
    (server.data_dir / STATUS_FILE).with_suffix(".tmp").mkdir()  # write_text fails
    killed = server.redis_pid
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 20
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while True:
            assert server.process.poll() is None, server.output()
            restarted = [
                p for p in children_named(server.process.pid, "redis-server") if p != killed
            ]
            if restarted and client.get("/readyz").status_code == 200:
                break
            assert time.monotonic() < deadline, f"Redis never came back:\n{server.output()}"
            time.sleep(0.05)
        server.redis_pid = restarted[0]
        assert gift(client, "after-the-restart").status_code == 200
    assert "could not write" in server.output()


async def test_a_hung_embedded_redis_costs_one_timeout_not_two(tmp_path: Path) -> None:
    """Over the embedded Redis's unix socket, redis-py reports a handshake that timed
    out as a ConnectionError, which the one retry on a new connection took for a
    restart: a SIGSTOPped Redis cost every call twice the timeout."""
    embedded = EmbeddedRedis(tmp_path)
    url = embedded.start()
    assert embedded.process is not None
    client = connect_single(url, TIMEOUT_S)
    try:
        await client.ping()
        embedded.process.send_signal(signal.SIGSTOP)
        for attempt in range(3):  # the pooled connection, then new ones
            started = time.monotonic()
            with pytest.raises(GiftingError) as refused:
                await guarded(client.ping())
            assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
            took = time.monotonic() - started
            assert took < TIMEOUT_S * 1.6, f"call {attempt} took {took:.2f} s"
        embedded.process.send_signal(signal.SIGCONT)
        assert await client.ping()  # and it works again once Redis continues
    finally:
        embedded.process.send_signal(signal.SIGCONT)
        await client.aclose()
        embedded.stop()


def test_serve_leaves_alone_an_orphaned_redis_that_something_still_uses(
    tmp_path: Path, served: list[Served]
) -> None:
    """Whatever still has a connection to the Redis a killed `serve` left (a worker
    that has not stopped yet, `gifting-server reconcile`) keeps it: the next `serve`
    refuses to start, as it did before it took orphans over."""
    first = Served(tmp_path / "data")
    served.append(first)
    first.start()
    assert first.process is not None and first.redis_pid is not None
    first.process.kill()
    first.process.wait()
    user = redis.Redis.from_url(EmbeddedRedis(first.data_dir).url)
    try:
        assert user.ping()
        second = Served(tmp_path / "data")
        served.append(second)
        with pytest.raises(AssertionError, match="a Redis already serves"):
            second.start(timeout_s=15)
        assert alive(first.redis_pid)
    finally:
        user.close()


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def test_after_a_kill_9_of_serve_its_workers_stop_and_the_next_serve_takes_over(
    tmp_path: Path, served: list[Served]
) -> None:
    first = Served(tmp_path / "data", workers=2)
    served.append(first)
    first.start()
    assert first.process is not None and first.redis_pid is not None
    workers = [p for p in children_of(first.process.pid) if p != first.redis_pid]
    with httpx.Client(base_url=first.url, timeout=10) as client:
        sent = gift(client, "before-serve-died")
        assert sent.status_code == 200, sent.text
    first.process.kill()
    first.process.wait()
    try:
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "the workers of a killed serve go on"
            time.sleep(0.05)
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    second = Served(tmp_path / "data")
    served.append(second)
    second.start()
    with httpx.Client(base_url=second.url, timeout=10) as client:
        assert gift(client, "before-serve-died").json() == sent.json()
    assert not alive(first.redis_pid)


def test_a_deleted_status_file_is_written_again(tmp_path: Path, served: list[Served]) -> None:
    """Without the status file, /readyz and /metrics no longer report the embedded
    Redis (a cleanup of the data dir, say): the supervisor writes it again."""
    server = Served(tmp_path / "data")
    served.append(server)
    server.start()
    status = server.data_dir / STATUS_FILE
    status.unlink()
    deadline = time.monotonic() + 5
    while not status.exists():
        assert time.monotonic() < deadline, "the status file is gone for good"
        time.sleep(0.02)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert metric(client, "gifting_embedded_redis_up") == 1
        assert client.get("/readyz").json()["embedded_redis"] == {"restarts": 0, "last_exit": None}
