"""One delivery attempt: a signed POST to an endpoint, connected to the address that
was checked (egress.py), time-boxed, its answer read up to a cap."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import httpx

from gifting_server.auth import sign_webhook
from gifting_server.errors import GiftingError
from gifting_server.webhooks.egress import Refused, Target, parse_target, resolve

SIGNATURE_HEADER = "Gifting-Signature"
MESSAGE_ID_HEADER = "Gifting-Message-Id"
USER_AGENT = "gifting-server-webhooks/1"


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to: `ok` for a 2xx answer; else the status (None when
    there was no answer) and what went wrong, for the streamer to read."""

    ok: bool
    status: int | None
    error: str | None
    at_ms: int
    duration_ms: int

    def public(self, message_id: str) -> dict[str, object]:
        return {
            "message_id": message_id,
            "at": self.at_ms,
            "ok": self.ok,
            "status": self.status,
            "error": self.error,
            "duration_ms": self.duration_ms,
        }


def new_client(verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """No connection is kept alive: each attempt connects to the address checked for
    it (a pooled connection, keyed by address, could carry another host's request
    over a TLS session made for the first), and no proxy from the environment."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_keepalive_connections=0),
        verify=verify,  # the system's certificate authorities (a test passes its own)
    )


def delivery_body(message_id: str, stream_id: str | None, event_json: str) -> bytes:
    """The body of a delivery: the event exactly as the stream's history holds it (as
    the WebSocket sends it), in the envelope the contract names. (No stream: a test
    delivery to an endpoint for all the streamer's streams.)"""
    stream = "null" if stream_id is None else f'"{stream_id}"'
    return f'{{"message_id":"{message_id}","stream_id":{stream},"event":{event_json}}}'.encode()


async def post(
    client: httpx.AsyncClient,
    url: str,
    secret: str,
    message_id: str,
    body: bytes,
    *,
    timeout_s: float,
    max_body_bytes: int,
    max_response_bytes: int,
    allow_private: bool,
) -> Attempt:
    started = time.monotonic()
    at_ms = int(time.time() * 1000)

    def done(ok: bool, status: int | None, error: str | None) -> Attempt:
        took = int((time.monotonic() - started) * 1000)
        return Attempt(ok, status, error, at_ms, took)

    if len(body) > max_body_bytes:
        return done(False, None, f"the message is {len(body)} bytes, over {max_body_bytes}")
    try:
        target = parse_target(url)
    except GiftingError as e:  # stored under an earlier version's rules
        return done(False, None, f"refused: {e.message}")
    try:
        async with asyncio.timeout(timeout_s):
            address = await resolve(target, allow_private)
            status = await _send(
                client, target, address, secret, message_id, body, timeout_s, max_response_bytes
            )
    except Refused as e:
        return done(False, None, f"refused: {e}")
    except TimeoutError:
        return done(False, None, f"no answer within {timeout_s:g}s")
    except (httpx.HTTPError, httpx.InvalidURL) as e:  # InvalidURL is no HTTPError
        return done(False, None, f"{type(e).__name__}: {e}"[:300])
    except OSError as e:
        return done(False, None, f"{type(e).__name__}: {e}"[:300])
    if 200 <= status < 300:
        return done(True, status, None)
    return done(False, status, f"answered {status}")


async def _send(
    client: httpx.AsyncClient,
    target: Target,
    address: str,
    secret: str,
    message_id: str,
    body: bytes,
    timeout_s: float,
    max_response_bytes: int,
) -> int:
    host_in_url = f"[{address}]" if ":" in address else address
    default_port = target.port == (443 if target.scheme == "https" else 80)
    host_header = f"[{target.host}]" if ":" in target.host else target.host
    if not default_port:
        host_header += f":{target.port}"
    headers = {
        "Host": host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign_webhook(secret, body, int(time.time())),
        MESSAGE_ID_HEADER: message_id,
    }
    request = client.build_request(
        "POST",
        f"{target.scheme}://{host_in_url}:{target.port}{target.path}",
        content=body,
        headers=headers,
        timeout=timeout_s,
        # TLS names the host, and its certificate is checked against it, not the address.
        extensions={"sni_hostname": target.host},
    )
    response = await client.send(request, stream=True)
    try:
        read = 0
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read >= max_response_bytes:
                break
    finally:
        await response.aclose()
    return response.status_code
