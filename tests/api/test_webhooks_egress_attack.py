"""Where outgoing webhooks may be sent, as a hostile client tries it: URLs and
addresses that hide a private target, URLs the HTTP client would refuse, redirects.
(Registration and delivery: test_webhooks_attack.py.)"""

from __future__ import annotations

import ipaddress
from typing import Any

import httpx
import pytest

from gifting_server.webhooks.egress import refusal
from gifting_server.webhooks.send import new_client, post
from tests.api import assert_error
from tests.api.test_http_flow import STREAMER, go_live
from tests.api.test_webhooks import (
    FAST_WEBHOOKS,
    gifts,
    listed,
    live_and_funded,
    register,
    snapshot,
)
from tests.api.test_webhooks_attack import http  # noqa: F401
from tests.faults import wait_until
from tests.topology import AsyncClient
from tests.webhook_receiver import Receiver, receiving

# IPv6 addresses that carry an IPv4 address a gateway or the host itself may reach:
# NAT64 (well-known and local-use prefixes), 6to4, IPv4-compatible, IPv4-translated;
# and the deprecated site-local range, private by another name.
HIDDEN_PRIVATE = (
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254 (cloud metadata)
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b:1::a00:1",  # the local-use NAT64 prefix, never public
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:c0a8:1::1",  # 6to4 of 192.168.0.1
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
    "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
    "fec0::1",  # site-local
)


@pytest.mark.parametrize("address", HIDDEN_PRIVATE)
def test_an_ipv6_address_carrying_a_private_ipv4_is_no_public_address(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "2606:4700::1"])
def test_an_ipv6_address_carrying_a_public_ipv4_is_public(address: str) -> None:
    """DNS64 gives IPv6-only hosts such names for every public IPv4 host."""
    assert refusal(ipaddress.ip_address(address)) is None


async def test_urls_hiding_a_private_address_are_refused_and_change_nothing(
    start: Any,
    redis: AsyncClient,
) -> None:
    server = start(webhooks={**FAST_WEBHOOKS, "allow_private": False})
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as refusing:
        await go_live(refusing, "s1")
        state = await snapshot(redis)
        urls = [f"http://[{address}]/hook" for address in HIDDEN_PRIVATE]
        urls += [
            # Held already: the resolver reads these the way inet_aton does, and the
            # address it answers is the one checked.
            "http://2130706433/hook",  # decimal 127.0.0.1
            "http://0177.0.0.1/hook",  # octal
            "http://0x7f.1/hook",  # hex, short form
            "http://127.1/hook",
            "http://0/hook",  # 0.0.0.0
            "http://localhost./hook",
            "http://[fe80::1%25lo]/hook",  # link-local with a zone
            "http://[::ffff:a9fe:a9fe]/hook",  # IPv4-mapped metadata address
            "http://100.64.0.1/hook",  # shared (carrier-grade NAT)
            "http://224.0.0.1/hook",  # multicast
        ]
        for url in urls:
            body = {"url": url, "kinds": ["gift"], "stream_id": "s1"}
            response = await refusing.post("/v1/webhooks", json=body, headers=STREAMER)
            assert_error(response, 422, "invalid_request")
            assert "refused" in response.json()["error"]["message"], url
        assert await snapshot(redis) == state


async def test_a_url_with_port_zero_is_refused(
    http: httpx.AsyncClient,  # noqa: F811
    redis: AsyncClient,
) -> None:
    """urlsplit reads ":0" as port 0, which was taken for the scheme's own port: the
    endpoint listed one URL and was sent to another."""
    await go_live(http, "s1")
    state = await snapshot(redis)
    for url in ("http://93.184.215.14:0/hook", "https://93.184.215.14:00/hook"):
        body = {"url": url, "kinds": ["gift"], "stream_id": "s1"}
        response = await http.post("/v1/webhooks", json=body, headers=STREAMER)
        assert_error(response, 422, "invalid_request")
        assert "port" in response.json()["error"]["message"]
    assert await snapshot(redis) == state


async def test_a_redirect_is_not_followed(
    http: httpx.AsyncClient,  # noqa: F811
    receiver: Receiver,
) -> None:
    async with receiving() as elsewhere:
        await live_and_funded(http)
        await register(http, receiver)
        receiver.redirect_to = elsewhere.url
        await gifts(http, 1)
        await receiver.wait_for_attempts(1)

        async def failed_attempt() -> dict[str, Any] | None:
            attempts = (await listed(http))[0]["attempts"]
            return attempts[0] if attempts else None

        attempt = await wait_until(failed_attempt, 10, "the attempt listed")
        assert (attempt["ok"], attempt["status"]) == (False, 307)
        assert elsewhere.arrived == 0


async def test_a_url_with_a_control_character_is_refused(
    http: httpx.AsyncClient,  # noqa: F811
    receiver: Receiver,
    redis: AsyncClient,
) -> None:
    """DEL (0x7f) passed the registration's check; the HTTP client then refused the
    URL at every attempt with an error no one caught: a 500 for a test delivery,
    and a stream whose deliveries failed with a traceback at every poll."""
    await go_live(http, "s1")
    state = await snapshot(redis)
    for url in (f"{receiver.url}/a\x7fb", f"{receiver.url}?q=\x7f"):
        body = {"url": url, "kinds": ["gift"], "stream_id": "s1"}
        response = await http.post("/v1/webhooks", json=body, headers=STREAMER)
        assert_error(response, 422, "invalid_request")
    assert await snapshot(redis) == state


async def test_an_attempt_to_a_url_the_http_client_refuses_is_a_failed_attempt() -> None:
    """Whatever the URL an endpoint was stored with (an earlier version's checks),
    an attempt to it ends as a failed attempt, never as an error escaping."""
    async with new_client() as client:
        attempt = await post(
            client,
            "http://127.0.0.1:9/a\x7fb",
            "whsec_x",
            "msg_s1_1",
            b"{}",
            timeout_s=1.0,
            max_body_bytes=1000,
            max_response_bytes=100,
            allow_private=True,
        )
    assert attempt.ok is False and attempt.status is None and attempt.error
