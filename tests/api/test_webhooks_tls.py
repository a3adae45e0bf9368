"""An HTTPS delivery attempt over a real TLS socket: connected to the address that
was checked, while TLS names the URL's host and checks the certificate against it
(a certificate for another name is refused). The certificate is made for the test
with the openssl command line."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gifting_server.auth import verify_webhook
from gifting_server.webhooks.send import new_client, post
from tests.redis_process import free_port

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")


def certificate(folder: Path) -> tuple[Path, Path]:
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


@contextlib.asynccontextmanager
async def tls_receiver(key: Path, cert: Path, seen: list[Request]) -> AsyncIterator[int]:
    async def hook(request: Request) -> Response:
        await request.body()
        seen.append(request)
        return Response(status_code=204)

    port = free_port()
    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, ssl_keyfile=str(key), ssl_certfile=str(cert),
        log_level="warning", lifespan="off",
    )  # fmt: skip
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def test_an_https_attempt_checks_the_certificate_of_the_urls_host(tmp_path: Path) -> None:
    key, cert = certificate(tmp_path)
    seen: list[Request] = []
    trusting = ssl.create_default_context(cafile=str(cert))
    async with (
        tls_receiver(key, cert, seen) as port,
        new_client(verify=trusting) as client,
    ):
        options = {"timeout_s": 5.0, "max_body_bytes": 65536, "max_response_bytes": 100}
        body = b'{"message_id":"m1","stream_id":"s1","event":{}}'
        attempt = await post(
            client, f"https://localhost:{port}/hook", "whsec_x", "m1", body,
            allow_private=True, **options,  # type: ignore[arg-type]
        )  # fmt: skip
        assert attempt.ok and attempt.status == 204, attempt
        [request] = seen
        assert request.headers["host"] == f"localhost:{port}"
        assert request.headers["gifting-message-id"] == "m1"
        verify_webhook("whsec_x", body, request.headers["gifting-signature"], 300)

        # The same address, but the certificate is not for that name. (A pooled
        # connection, made for localhost, would have taken it: new_client keeps none.)
        refused = await post(
            client, f"https://127.0.0.1:{port}/hook", "whsec_x", "m2", body,
            allow_private=True, **options,  # type: ignore[arg-type]
        )  # fmt: skip
        assert not refused.ok and refused.status is None
        assert "CERTIFICATE_VERIFY_FAILED" in (refused.error or "")
        assert len(seen) == 1
