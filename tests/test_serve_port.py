"""`serve` on a port another process holds: one clear line, before anything starts."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.redis_process import free_port
from tests.test_cli import run


def test_a_busy_port_is_one_line_naming_it_and_a_failing_exit(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()

        done = run(tmp_path / "data", "serve", "--port", str(port), "--demo")

    assert done.returncode != 0
    assert done.stdout == ""  # no demo banner, no URLs
    assert done.stderr == (
        f"error: port {port} is in use; stop the other server or pass --port (make run PORT=...)\n"
    )
    # nothing was started: the embedded Redis writes its files in the data dir
    assert not (tmp_path / "data" / "redis.log").exists()
