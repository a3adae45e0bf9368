"""`make run-cluster` (`python -m gifting_server.run_cluster`) as a user runs it: a
cluster, two workers with the demo live on both, and Ctrl-C stops every process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.cluster
START_TIMEOUT_S = 120.0


def two_free_ports() -> int:
    """A port P with P + 1 free too: the launcher's two workers."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two adjacent free ports")


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Launcher:
    """The launcher's process and every line it printed, read by a thread."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gifting_server.run_cluster", "--data-dir", str(data_dir),
             "--port", str(port), "--node-timeout-ms", "1000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            # Ctrl-C as from a terminal: a process started in the background by a
            # non-interactive shell (a CI script, `cmd &`) has SIGINT ignored, and the
            # launcher would inherit that and never see the test's SIGINT.
            preexec_fn=default_sigint,
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, fragment: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(fragment in line for line in self.lines):
            assert self.process.poll() is None, f"the launcher exited:\n{self.output}"
            assert time.monotonic() < deadline, f"no {fragment!r} in:\n{self.output}"
            time.sleep(0.05)

    def close(self) -> None:
        if self.process.poll() is None:  # the test failed: stop what it started anyway
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                for pid in self.started_pids():
                    if alive(pid):
                        os.kill(pid, signal.SIGKILL)
        self.reader.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()

    def started_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"\(pid (\d+)", self.output)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_run_cluster_serves_the_demo_on_two_workers_and_ctrl_c_stops_everything(
    tmp_path: Path,
) -> None:
    port = two_free_ports()
    urls = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
    launcher = Launcher(tmp_path / "cluster", port)
    try:
        launcher.wait_for_line("ready: 2 workers over 6 Redis nodes", START_TIMEOUT_S)
        for url in urls:
            assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
            stream = httpx.get(f"{url}/v1/streams/demo", timeout=5).json()
            assert (stream["status"], stream["streamer_id"]) == ("live", "demo_streamer")
            assert f"{url}/client?stream_id=demo&token=" in launcher.output
            assert f"{url}/overlay/alerts?stream_id=demo" in launcher.output
        assert len(re.findall(r"node redis://127\.0\.0\.1:\d+ master", launcher.output)) == 3
        assert len(re.findall(r"node redis://127\.0\.0\.1:\d+ replica", launcher.output)) == 3
        pids = launcher.started_pids()
        assert len(pids) == 8 and all(alive(pid) for pid in pids), launcher.output

        launcher.process.send_signal(signal.SIGINT)
        assert launcher.process.wait(timeout=60) == 0, launcher.output
        launcher.reader.join(timeout=10)  # the last lines
        assert "everything it started has stopped" in launcher.output
        assert [pid for pid in pids if alive(pid)] == []
        for url in urls:
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{url}/readyz", timeout=5)
    finally:
        launcher.close()
