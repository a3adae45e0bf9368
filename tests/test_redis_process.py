"""The tests' own redis-server: a port another process took between its pick and the
server's bind is picked again, and another server answering on a port is never taken
for this one (the suite runs in parallel workers, each starting servers)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests import redis_process
from tests.redis_process import PortTaken, RedisProcess


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port a plain socket holds for the test (bound, not listening: a connection to
    it is refused at once)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


def test_a_picked_port_taken_before_the_server_binds_it_is_picked_again(
    tmp_path: Path, held_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    picks = iter([held_port, held_port])  # the race, twice; then the OS's own picks
    real_pick = redis_process.free_port
    monkeypatch.setattr(redis_process, "free_port", lambda: next(picks, None) or real_pick())
    server = RedisProcess(tmp_path / "redis")
    assert server.port == held_port
    server.start()
    try:
        assert server.port != held_port
        client = redis.Redis(port=server.port)
        assert int(client.info("server")["process_id"]) == server.process.pid  # type: ignore[union-attr]
        client.close()
    finally:
        server.stop()


def test_a_given_port_another_redis_answers_on_is_refused_and_that_redis_left_alone(
    tmp_path: Path,
) -> None:
    other = RedisProcess(tmp_path / "other")
    other.start()
    try:
        other_client = redis.Redis(port=other.port)
        other_client.set("mine", "kept")
        server = RedisProcess(tmp_path / "redis", port=other.port)
        with pytest.raises(PortTaken):
            server.start()
        assert server.process is not None and server.process.poll() is not None
        assert other_client.get("mine") == b"kept"
        assert int(other_client.info("server")["process_id"]) == other.process.pid  # type: ignore[union-attr]
        other_client.close()
    finally:
        other.stop()


def test_a_restart_keeps_its_port(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        port = server.port
        server.kill()
        server.start()
        assert server.port == port and redis.Redis(port=port).ping()
    finally:
        server.stop()
