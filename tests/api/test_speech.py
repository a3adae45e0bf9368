"""A gift's message as speech (GET /v1/streams/{id}/speech/{event_id}) with the real
espeak-ng: what qualifies, every refusal, the cache, and text that looks like options."""

from __future__ import annotations

import shutil
import struct
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from gifting_server.auth import Role
from tests.api import assert_error
from tests.api.test_http_flow import STREAMER, buy, gift, go_live
from tests.api.test_studio_api import OTHER_STREAMER, OVERLAY, message_gift, put_settings
from tests.factories import auth

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng)",
)

OTHER_OVERLAY = auth("streamer2", Role.OVERLAY, stream_id="s2")
VIEWER = auth("bob", Role.VIEWER)


def renders() -> float:
    return REGISTRY.get_sample_value("gifting_speech_renders_total", {"outcome": "ok"}) or 0.0


@pytest.fixture
async def live(http: httpx.AsyncClient) -> httpx.AsyncClient:
    await go_live(http, "s1")
    await buy(http, "alice", "coins_500")
    await put_settings(http, {"messages": {"tts": True, "tts_min_coins": 10}})
    return http


async def spoken(live: httpx.AsyncClient, message: str, count: int = 2) -> int:
    """A finger heart (5 coins) times count with `message`: its event id."""
    key = f"k{len(message)}-{abs(hash(message))}-{count}"
    response = await message_gift(live, key, message, "finger_heart", count)
    assert response.status_code == 200, response.text
    event_id: int = response.json()["event_id"]
    return event_id


async def speech(live: httpx.AsyncClient, event_id: Any, who: Any = OVERLAY, stream: str = "s1"):  # type: ignore[no-untyped-def]
    return await live.get(f"/v1/streams/{stream}/speech/{event_id}", headers=who)


def assert_wav(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert "max-age" in response.headers["cache-control"]
    body = response.content
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    assert struct.unpack_from("<I", body, 4)[0] == len(body) - 8  # sizes set, not placeholders
    assert len(body) > 1000  # more than a header: there is sound


async def test_a_qualifying_message_is_wav_and_a_second_request_is_served_from_the_cache(
    live: httpx.AsyncClient,
) -> None:
    event_id = await spoken(live, "thank you for the stream")
    before = renders()
    first = await speech(live, event_id)
    assert_wav(first)
    assert renders() == before + 1
    again = await speech(live, event_id, STREAMER)  # the streamer may listen too
    assert again.content == first.content
    assert renders() == before + 1  # the cache answered: espeak-ng did not run again


async def test_a_message_that_looks_like_an_option_is_spoken(live: httpx.AsyncClient) -> None:
    for text in ("--help", "-w /tmp/x.wav hello", "--version"):
        assert_wav(await speech(live, await spoken(live, text)))


async def test_every_refusal_renders_nothing(live: httpx.AsyncClient) -> None:
    with_message = await spoken(live, "hello there")
    cheap = await spoken(live, "too cheap", count=1)  # 5 coins, under tts_min_coins 10
    silent = (await gift(live, auth("alice", Role.VIEWER), "plain", "finger_heart", 2)).json()
    await go_live(live, "s2", OTHER_STREAMER)
    before = renders()
    assert_error(await speech(live, cheap), 403, "speech_not_allowed")
    assert_error(await speech(live, silent["event_id"]), 404, "unknown_event")
    assert_error(await speech(live, 9999), 404, "unknown_event")
    assert_error(await speech(live, "x1"), 404, "unknown_event")
    assert_error(await speech(live, with_message, OTHER_OVERLAY), 403, "forbidden")
    assert_error(await speech(live, with_message, OTHER_STREAMER), 403, "forbidden")
    assert_error(await speech(live, with_message, VIEWER), 403, "forbidden")
    assert_error(
        await speech(live, with_message, {"Authorization": "Bearer nope"}), 401, "unauthorized"
    )
    assert_error(await speech(live, with_message, {}), 401, "unauthorized")
    assert_error(await speech(live, with_message, OTHER_STREAMER, "s2"), 404, "unknown_event")
    await put_settings(live, {"messages": {"tts": False}})
    assert_error(await speech(live, with_message), 403, "speech_not_allowed")
    assert renders() == before
