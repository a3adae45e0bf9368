"""The `gifting-server` command as a real subprocess: serve with its embedded Redis, restart
on the same data dir, token, reconcile, and a bad config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import redis

from gifting_server.auth import Role, sign_webhook, verify_token
from gifting_server.embedded_redis import EmbeddedRedis
from tests.conftest import SECRET, WEBHOOK_SECRET
from tests.factories import auth
from tests.redis_process import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "gifting-server"
RECONCILE_EXISTS = (ROOT / "gifting_server" / "ledger" / "reconcile.py").exists()


def command(*args: str) -> list[str]:
    if SCRIPT.exists():
        return [str(SCRIPT), *args]
    return [sys.executable, "-m", "gifting_server", *args]


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment minus any GIFTING_* of the caller: no GIFTING_REDIS_URL unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        GIFTING_DATA_DIR=str(data_dir),
        GIFTING_SECRET=SECRET,
        GIFTING_WEBHOOK_SECRET=WEBHOOK_SECRET,
        **extra,
    )
    return env


def run(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        env=cli_env(data_dir, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def children_named(parent: int, name: str) -> list[int]:
    """Pids of the live (non-zombie) children of `parent` whose command name is `name`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if comm == name and int(ppid) == parent and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class Served:
    """`gifting-server serve --demo` on a free port with the embedded Redis in `data_dir`."""

    def __init__(self, data_dir: Path, workers: int = 1) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.redis_pid: int | None = None

    def start(self, timeout_s: float = 60.0) -> Served:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command(
                    "serve", "--port", str(self.port), "--workers", str(self.workers), "--demo"
                ),
                env=cli_env(self.data_dir, PYTHONUNBUFFERED="1"),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while True:
                assert self.process.poll() is None, f"serve exited:\n{self.output()}"
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"no /healthz answer:\n{self.output()}"
                time.sleep(0.05)
        redis_pids = children_named(self.process.pid, "redis-server")
        assert len(redis_pids) == 1, redis_pids
        self.redis_pid = redis_pids[0]
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def cleanup(self) -> None:
        """Whatever this test started and is still running: stop it."""
        if self.redis_pid is None and self.process is not None:
            self.redis_pid = next(iter(children_named(self.process.pid, "redis-server")), None)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.redis_pid is not None and alive(self.redis_pid):
            os.kill(self.redis_pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while alive(self.redis_pid) and time.monotonic() < deadline:
                time.sleep(0.02)


@pytest.fixture
def served() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for server in started:
        server.cleanup()


def full_flow(client: httpx.Client) -> None:
    """A recharge, gifts from a new and a demo viewer, the leaderboard and the wallets."""
    assert client.get("/v1/streams/demo").json()["status"] == "live"
    body = (
        b'{"event_id":"cli-1","type":"payment.succeeded","user_id":"dave","package_id":"coins_500"}'
    )
    signature = sign_webhook(WEBHOOK_SECRET, body, int(time.time()))
    paid = client.post(
        "/v1/payments/webhook", content=body, headers={"Gifting-Signature": signature}
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["credited"] == 500

    gifts = [("dave", "Dave", "rose", 5, 495), ("alice", "Alice", "hand_hearts", 2, 9800)]
    for user_id, name, gift_id, count, left in gifts:
        sent = client.post(
            "/v1/streams/demo/gifts",
            json={"gift_id": gift_id, "count": count, "idempotency_key": f"cli-{user_id}"},
            headers=auth(user_id, name=name),
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["coins"] == left
    check_balances(client)


def check_balances(client: httpx.Client) -> None:
    board = client.get("/v1/streams/demo/leaderboard").json()["entries"]
    assert board == [
        {"rank": 1, "user_id": "alice", "name": "Alice", "coins": 200},
        {"rank": 2, "user_id": "dave", "name": "Dave", "coins": 5},
    ]
    expected = {"dave": 495, "alice": 9800, "bob": 10000, "carol": 10000}
    for user_id, coins in expected.items():
        assert client.get("/v1/wallet", headers=auth(user_id)).json()["coins"] == coins, user_id
    streamer = client.get("/v1/wallet", headers=auth("demo_streamer", Role.STREAMER)).json()
    assert streamer["diamonds"] == 102  # floor(205 coins * 50%)


def test_serve_answers_the_full_flow_and_stops_with_its_redis_on_sigterm(
    tmp_path: Path, served: list[Served]
) -> None:
    server = Served(tmp_path / "data")
    served.append(server)
    server.start()
    assert "gifting_server demo" in server.output()
    # The streamer's studio, ready to open (the token is that of the demo streamer).
    assert f"{server.url}/studio?stream_id=demo&token=" in server.output()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/v1/streams/demo").json()["streamer_name"] == "Demo Streamer"
        full_flow(client)
        assert client.get("/openapi.json").status_code == 200

    code = server.terminate()
    assert code in (0, -signal.SIGTERM), server.output()
    assert server.redis_pid is not None
    assert not alive(server.redis_pid), "serve exited but left its redis-server running"
    assert not EmbeddedRedis(server.data_dir)._answers()


def test_restart_on_the_same_data_dir_keeps_every_balance(
    tmp_path: Path, served: list[Served]
) -> None:
    first = Served(tmp_path / "data")
    served.append(first)
    first.start()
    with httpx.Client(base_url=first.url, timeout=10) as client:
        full_flow(client)
    first.terminate()
    # the test above checks that SIGTERM stops the embedded Redis; this one is about the AOF,
    # so a redis-server left behind is stopped here (cleanly) before the restart
    first.cleanup()

    second = Served(tmp_path / "data")
    served.append(second)
    second.start()  # --demo again: seeding is idempotent, nothing is credited twice
    with httpx.Client(base_url=second.url, timeout=10) as client:
        check_balances(client)
    second.terminate()


def test_token_prints_a_token_that_verifies(tmp_path: Path) -> None:
    result = run(tmp_path, "token", "alice", "--role", "viewer", "--name", "Alice", "--ttl", "60")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    who = verify_token(SECRET, token)
    assert (who.user_id, who.name, who.role, who.adult) == ("alice", "Alice", Role.VIEWER, True)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="gifting_server")
    assert claims["exp"] - claims["iat"] == 60


def test_token_options_for_overlays_and_minors(tmp_path: Path) -> None:
    overlay = run(tmp_path, "token", "st", "--role", "overlay", "--stream", "s1")
    assert overlay.returncode == 0, overlay.stderr
    who = verify_token(SECRET, overlay.stdout.strip())
    assert (who.role, who.stream_id) == (Role.OVERLAY, "s1")
    minor = run(tmp_path, "token", "kid", "--no-adult")
    assert verify_token(SECRET, minor.stdout.strip()).adult is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("token", "st", "--role", "overlay"), "overlay token needs a stream"),
        (("token", "bad id"), "user id"),
        (("token", "u\n"), "user id"),
        (("token", "st", "--role", "overlay", "--stream", "s1\n"), "stream id"),
        # a token that is expired when printed, or whose exp is past 2^53 (JavaScript)
        (("token", "alice", "--ttl", "0"), "ttl"),
        (("token", "alice", "--ttl", "-60"), "ttl"),
        (("token", "alice", "--ttl", str(10**30)), "ttl"),
    ],
)
def test_token_refuses_bad_arguments_with_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = run(tmp_path, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_bad_config_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[packages]]\nid = "coins_100"\ncoins = 100\nprice = -5\n')
    result = run(tmp_path, "serve", "--port", str(free_port()), GIFTING_CONFIG=str(bad))
    assert result.returncode == 2
    assert "config error" in result.stderr
    assert "price must be a positive integer, got -5" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "redis.sock").exists()  # it stopped before starting anything


@pytest.mark.parametrize("ttl", [0, 10**18])
def test_serve_refuses_an_idempotency_ttl_redis_would_refuse(tmp_path: Path, ttl: int) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f"[limits]\nidempotency_ttl_s = {ttl}\n")
    result = subprocess.run(
        command("serve", "--port", str(free_port())),
        env=cli_env(tmp_path, GIFTING_CONFIG=str(bad)),
        capture_output=True,
        text=True,
        timeout=20,  # a server that starts instead never exits by itself
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"idempotency_ttl_s must be in 1..315360000, got {ttl} (in {bad})" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "redis.sock").exists()


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run(tmp_path, "token", "alice", GIFTING_CONFIG=str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert f"config file not found: {tmp_path / 'missing.toml'}" in result.stderr


@pytest.mark.skipif(not RECONCILE_EXISTS, reason="gifting_server/ledger/reconcile.py not written")
async def test_reconcile_exit_code_follows_the_ledger(tmp_path: Path, redis_url: str) -> None:
    from gifting_server.ledger import gifts, keys
    from gifting_server.ledger.store import Store, connect_single
    from tests.conftest import make_settings
    from tests.factories import fund, live_stream, viewer

    assert run(tmp_path, "reconcile", GIFTING_REDIS_URL=redis_url).returncode == 0  # empty
    settings = make_settings(redis_url, tmp_path)
    store = Store(connect_single(redis_url, 2.0), settings)
    try:
        await fund(store, "alice")
        await live_stream(store)
        rose = settings.gift("rose")
        assert rose is not None
        await gifts.run_send_gift(store, viewer("alice"), "s1", rose, 7, "k1")
    finally:
        await store.close()
    healthy = run(tmp_path, "reconcile", GIFTING_REDIS_URL=redis_url)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr

    sync = redis.Redis.from_url(redis_url)
    sync.hincrby(keys.wallet("alice"), "coins", 1000)  # coins out of thin air
    sync.close()
    broken = run(tmp_path, "reconcile", GIFTING_REDIS_URL=redis_url)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "alice" in broken.stdout
