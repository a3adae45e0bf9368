"""The log format: `serve` as a real process, its stderr parsed line by line."""

from __future__ import annotations

import io
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websocket

from gifting_server import logs
from gifting_server.auth import Role
from tests.factories import signed_webhook, token
from tests.redis_process import free_port
from tests.test_cli import cli_env, command

ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")
TEXT_LINE = re.compile(r"^(\S+) (DEBUG|INFO|WARNING|ERROR|CRITICAL) +(\S+): ")


class LoggedServer:
    """`gifting-server serve` on a free port over the test Redis, stderr to a file."""

    def __init__(self, tmp_path: Path, redis_url: str, log_format: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr = tmp_path / f"serve-{self.port}.err"
        config = tmp_path / "logging.toml"
        config.write_text(f'[logging]\nformat = "{log_format}"\n')
        with self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                command("serve", "--port", str(self.port)),
                env=cli_env(
                    tmp_path / "data",
                    GIFTING_REDIS_URL=redis_url,
                    GIFTING_CONFIG=str(config),
                    PYTHONUNBUFFERED="1",
                ),
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        with httpx.Client(base_url=self.url, timeout=2) as client:
            deadline = time.monotonic() + 60
            while True:
                assert self.process.poll() is None, self.output()
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, self.output()
                time.sleep(0.05)

    def stop(self) -> str:
        """Stop it (its shutdown lines included) and return all it wrote to stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        return self.output()

    def output(self) -> str:
        return self.stderr.read_text(errors="replace")


@pytest.fixture
def json_server(tmp_path: Path, redis_url: str) -> Iterator[LoggedServer]:
    server = LoggedServer(tmp_path, redis_url, "json")
    yield server
    server.stop()


def exercise(server: LoggedServer) -> list[str]:
    """Requests that must each leave a line; returns the tokens used (never logged)."""
    streamer = token("streamer1", Role.STREAMER)
    viewer = token("alice")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        answer = client.get(f"/client?token={viewer}", headers={"X-Request-Id": "req-42"})
        assert answer.headers["x-request-id"] == "req-42"
        bogus = client.get("/healthz", headers={"X-Request-Id": "x" * 129})
        assert re.fullmatch(r"[0-9a-f]{16}", bogus.headers["x-request-id"])
        headers = {"Authorization": f"Bearer {streamer}"}
        assert client.post("/v1/streams", json={"stream_id": "s1"}, headers=headers).is_success
        payment = {
            "event_id": "evt-1",
            "type": "payment.succeeded",
            "user_id": "alice",
            "package_id": "coins_100",
        }
        raw, signed = signed_webhook(payment)
        assert client.post("/v1/payments/webhook", content=raw, headers=signed).is_success
        assert client.post("/v1/payments/webhook", content=raw, headers=signed).is_success
        forged = {"Gifting-Signature": f"t={int(time.time())},v1=00"}
        assert client.post("/v1/payments/webhook", content=raw, headers=forged).status_code == 401
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/v1/ws?token={viewer}",
            header=["X-Request-Id: ws-7"],
            timeout=10,
        )
        ws.close()
        assert client.post("/v1/streams/s1/end", headers=headers).is_success
    return [streamer, viewer]


def test_json_lines_carry_time_level_logger_message_and_never_a_token(
    json_server: LoggedServer,
) -> None:
    secrets = exercise(json_server)
    deadline = time.monotonic() + 10  # the WebSocket's line comes when its socket closes
    while '"method":"WS"' not in json_server.output():
        assert time.monotonic() < deadline, json_server.output()
        time.sleep(0.05)
    output = json_server.stop()

    lines = [orjson.loads(line) for line in output.splitlines()]
    for line in lines:
        assert ISO_TIME.match(line["time"]), line
        assert {"level", "logger", "message"} <= line.keys(), line
    assert not [s for s in secrets if s in output]
    assert "token=" not in output
    loggers = {line["logger"] for line in lines}
    assert "uvicorn.error" in loggers  # uvicorn's own lines share the format

    access = [line for line in lines if line["logger"] == "gifting_server.access"]
    wallet = next(line for line in access if line["request_id"] == "req-42")
    assert (wallet["method"], wallet["path"], wallet["status"]) == ("GET", "/client", 200)
    assert isinstance(wallet["duration_ms"], float)
    [ws] = [line for line in access if line["method"] == "WS"]
    assert (ws["path"], ws["close_code"], ws["request_id"]) == ("/v1/ws", 1000, "ws-7")

    audit = [line for line in lines if line["logger"] == "gifting_server.audit"]
    assert [line["message"] for line in audit] == [
        "stream_started",
        "payment_applied",
        "payment_duplicate",
        "webhook_signature_rejected",
        "stream_ended",
    ]
    assert audit[1]["event_id"] == "evt-1"
    assert audit[1]["coins_credited"] == 100


def test_text_lines_all_start_with_date_time_and_zone(tmp_path: Path, redis_url: str) -> None:
    server = LoggedServer(tmp_path, redis_url, "text")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        client.get("/healthz", headers={"X-Request-Id": "txt-1"})
    output = server.stop()

    lines = output.splitlines()
    assert any("Uvicorn running on" in line for line in lines), output
    for line in lines:
        match = TEXT_LINE.match(line)
        assert match and ISO_TIME.match(match.group(1)), line
    assert any(
        "gifting_server.access: GET /healthz 200" in line and "request_id=txt-1" in line
        for line in lines
    )


def record(**fields: Any) -> logging.LogRecord:
    line = logging.LogRecord(
        "gifting_server.audit", logging.INFO, __file__, 1, "msg %s", ("x",), None
    )
    line.fields = fields
    return line


def test_text_fields_are_quoted_when_they_hold_spaces_or_newlines() -> None:
    text = logs.TextFormatter().format(record(reason="has space\nand newline", n=3))
    assert text.endswith(' gifting_server.audit: msg x reason="has space\\nand newline" n=3')
    assert "\n" not in text


def test_a_field_cannot_overwrite_the_core_keys_of_a_json_line() -> None:
    line = orjson.loads(logs.JsonFormatter().format(record(message="forged", level="X")))
    assert (line["message"], line["level"]) == ("msg x", "INFO")
    assert (line["field_message"], line["field_level"]) == ("forged", "X")


def test_lines_go_to_stderr_as_it_is_when_written_not_a_closed_old_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure()
        old, new = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stderr", old)
        old.close()  # whoever swapped stderr closed the one before
        monkeypatch.setattr(sys, "stderr", new)
        logging.getLogger("gifting_server.test").warning("still written")
        assert new.getvalue().endswith("WARNING gifting_server.test: still written\n")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
