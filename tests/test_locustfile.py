"""load/locustfile.py in a real headless locust run: a WebSocket gifter, an HTTP gifter
and a viewer against a real server for a few seconds, without a single failure.

Locust patches the standard library for gevent as it is imported, so it runs in a
subprocess, never in the test process."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from gifting_server.config import Settings
from gifting_server.load_setup import set_up_load, write_users_file
from tests.conftest import ServerThread, make_settings

LOCUSTFILE = Path(__file__).resolve().parent.parent / "load" / "locustfile.py"
LOCUST = Path(sys.executable).parent / "locust"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="locust is not installed (the dev extra)"
)


async def test_a_short_locust_run_gifts_and_delivers_without_a_failure(
    server: ServerThread, settings: Settings, tmp_path: Path
) -> None:
    document = await set_up_load(
        settings, server.url, ["smoke"], ["ws_gifter", "http_gifter", "viewer"]
    )
    users_file = tmp_path / "users.json"
    write_users_file(users_file, document)
    command = [str(LOCUST)] if LOCUST.exists() else [sys.executable, "-m", "locust"]

    # The run's length, not a wait for an outcome: long enough for each user's first
    # gift (a gifter waits up to ~1.5 s at random before it) on a machine busy with
    # other tests, which a 3 s run was not always.
    run = subprocess.run(
        [
            *command, "-f", str(LOCUSTFILE), "--headless", "--host", server.url,
            "--users", "3", "--spawn-rate", "10", "--run-time", "6s",
            "--viewers", "1", "--http-gifters", "1", "--gift-rate", "5", "--tap-interval", "0.1",
            "--users-file", str(users_file), "--csv", str(tmp_path / "smoke"), "--only-summary",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert run.returncode == 0, run.stdout + run.stderr
    with (tmp_path / "smoke_stats.csv").open() as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    assert rows["Aggregated"]["Failure Count"] == "0", run.stdout
    for name in ("connect", "subscribe", "gift", "/v1/streams/[id]/gifts", "deliver gift"):
        assert int(rows[name]["Request Count"]) > 0, f"no {name!r} in\n{run.stdout}"


async def test_a_locust_run_with_battles_delivers_battle_events_in_order(
    redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, tmp_path, battles={"min_duration_s": 1, "tick_ms": 100})
    with ServerThread(settings) as server:
        document = await set_up_load(
            settings, server.url, ["duel-1", "duel-2"], ["fan1", "fan2", "fan3", "fan4"]
        )
        users_file = tmp_path / "users.json"
        write_users_file(users_file, document)
        command = [str(LOCUST)] if LOCUST.exists() else [sys.executable, "-m", "locust"]
        run = subprocess.run(
            [
                *command, "-f", str(LOCUSTFILE), "--headless", "--host", server.url,
                # 10 s: on a busy slow machine, 5 s ended the run before the battle of 1 s
                # had been invited, accepted and ended
                "--users", "5", "--spawn-rate", "20", "--run-time", "10s",
                "--viewers", "2", "--http-gifters", "0", "--battles", "1",
                "--battle-duration", "1", "--gift-rate", "5", "--tap-interval", "0.1",
                "--users-file", str(users_file), "--csv", str(tmp_path / "duel"),
                "--only-summary",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    with (tmp_path / "duel_stats.csv").open() as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    assert rows["Aggregated"]["Failure Count"] == "0", run.stdout
    assert "event order" not in rows, run.stdout
    for name in ("/v1/battles", "/v1/battles/[id]/accept", "battle ended", "deliver battle"):
        assert int(rows[name]["Request Count"]) > 0, f"no {name!r} in\n{run.stdout}"
