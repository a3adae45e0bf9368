"""The peer: a minimal Node.js `ws` broadcast server (load/peer/server.js), one
frame per event, measured with the same viewer harness as our server."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

from load.bench.fanout import STREAM, Target

PEER_DIR = Path(__file__).resolve().parents[1] / "peer"


def install_peer() -> None:
    """npm ci from the lock file (ws, pinned) the first time."""
    if not (PEER_DIR / "node_modules" / "ws").exists():
        if not shutil.which("npm"):
            raise RuntimeError("npm is needed for the peer benchmark (apt-get install npm)")
        subprocess.run(
            ["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=PEER_DIR, check=True
        )


class PeerServer(Target):
    def __init__(self, port: int, cpu: int = 0) -> None:
        install_peer()
        self.port = port
        command = ["node", str(PEER_DIR / "server.js"), str(port)]
        if shutil.which("taskset"):
            command = ["taskset", "-c", str(cpu), *command]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "peer listening on ..."
        self.pid = self.process.pid  # taskset execs node, so this is node's pid

    def drive(self, rate: float, duration: float) -> int:
        return asyncio.run(self._feed(rate, duration))

    async def _feed(self, rate: float, duration: float) -> int:
        sent = 0
        async with connect(f"ws://127.0.0.1:{self.port}/feed") as ws:
            start = time.perf_counter()
            while (elapsed := time.perf_counter() - start) < duration:
                while sent < int(elapsed * rate) + 1:
                    sent += 1
                    await ws.send(orjson.dumps(peer_event(sent)).decode())
                await asyncio.sleep(max(0.0, sent / rate - (time.perf_counter() - start)))
            await asyncio.sleep(1.0)
        return sent

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def peer_event(event_id: int) -> dict[str, object]:
    """The same `events` frame our server sends for one gift, one event per frame."""
    return {
        "type": "events",
        "stream_id": STREAM,
        "events": [
            {
                "event_id": event_id,
                "kind": "gift",
                "ts": time.time_ns() // 1_000_000,
                "sender": {"id": "gifter", "name": "Gifter"},
                "gift": {"id": "rose", "name": "Rose", "coins": 1, "tier": 1},
                "count": 1,
                "combo": event_id,
                "streak_end": False,
                "coins_total": event_id,
            }
        ],
    }
