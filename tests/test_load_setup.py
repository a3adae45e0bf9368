"""`gifting-server load-setup` against a real server: the streams go live, every user is
funded through the signed payment webhook, and the tokens it writes work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from gifting_server.config import Settings
from gifting_server.load_setup import set_up_load
from tests.conftest import SECRET, WEBHOOK_SECRET, ServerThread

SCRIPT = Path(sys.executable).parent / "gifting-server"


def load_setup(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gifting_server"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
    environment.update(
        GIFTING_DATA_DIR=str(data_dir), GIFTING_SECRET=SECRET, GIFTING_WEBHOOK_SECRET=WEBHOOK_SECRET
    )
    environment.update(env)
    return subprocess.run(
        [*command, "load-setup", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_load_setup_funds_every_user_through_the_webhook(
    server: ServerThread, tmp_path: Path
) -> None:
    out = tmp_path / "users.json"
    result = load_setup(
        tmp_path, "--users", "5", "--streams", "2", "--stream", "lt",
        "--host", server.url, "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "funded 5/5 users" in result.stderr

    document = json.loads(out.read_text())
    assert out.stat().st_mode & 0o777 == 0o600  # it holds bearer tokens
    assert document["streams"] == ["lt-1", "lt-2"]
    users = document["users"]
    assert [u["user_id"] for u in users] == [f"load_0000{i}" for i in range(1, 6)]
    assert [u["stream_id"] for u in users] == ["lt-1", "lt-2", "lt-1", "lt-2", "lt-1"]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for stream_id in document["streams"]:
            assert client.get(f"/v1/streams/{stream_id}").json()["status"] == "live"
        for user in users:
            wallet = client.get(
                "/v1/wallet", headers={"Authorization": f"Bearer {user['token']}"}
            ).json()
            assert wallet["coins"] == user["coins"] == 50_000


async def test_every_run_buys_until_each_user_holds_the_coins_asked_for(
    server: ServerThread, settings: Settings
) -> None:
    first = await set_up_load(settings, server.url, ["s"], ["ann", "bo"], coins=60_000)
    assert [u["coins"] for u in first["users"]] == [100_000, 100_000]  # two 50k packages

    again = await set_up_load(settings, server.url, ["s"], ["ann"], coins=60_000)
    assert again["users"][0]["coins"] == 150_000  # a new run pays again, never replays


def test_a_refused_webhook_stops_the_setup_with_the_servers_reason(
    server: ServerThread, tmp_path: Path
) -> None:
    result = load_setup(
        tmp_path, "--users", "2", "--host", server.url, "--out", str(tmp_path / "users.json"),
        GIFTING_WEBHOOK_SECRET="not-the-servers-webhook-secret-0123456789",
    )  # fmt: skip
    assert result.returncode == 1
    assert "invalid_signature" in result.stderr
    assert not (tmp_path / "users.json").exists()
