"""Two live streams of two streamers on one real server, with battles short enough to
run whole in a browser test: shared by the battle overlay, client and studio tests."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from gifting_server.auth import Role
from gifting_server.config import Battles
from tests.factories import token
from tests.overlay.conftest import Live, bearer, overlay_settings

# A battle may last 1 s, and its score is published every 100 ms.
BATTLES = Battles(min_duration_s=1, tick_ms=100)
STREAMERS = {"s1": ("streamer1", "Streamer One"), "s2": ("streamer2", "Streamer Two")}
_keys = itertools.count(1)


class Arena(Live):
    """`s1` (Streamer One) and `s2` (Streamer Two), both live."""

    def start(self, stream_id: str) -> None:
        streamer, name = STREAMERS[stream_id]
        response = self.http.post(
            "/v1/streams",
            json={"stream_id": stream_id},
            headers=bearer(streamer, Role.STREAMER, name=name),
        )
        assert response.status_code in (200, 201), response.text

    def overlay_of(self, stream_id: str, **options: object) -> str:
        overlay = token(STREAMERS[stream_id][0], Role.OVERLAY, stream_id=stream_id)
        query = {"stream_id": stream_id, "token": overlay, **options}
        return f"{self.url}/overlay/battle?{urlencode(query)}"

    def as_streamer(self, stream_id: str) -> dict[str, str]:
        streamer, name = STREAMERS[stream_id]
        return bearer(streamer, Role.STREAMER, name=name)

    def invite(self, duration_s: int, stream_id: str = "s1", opponent: str = "s2") -> str:
        """Invite, waiting out the release of the streams' last battle (its final step
        comes just after the final state is published)."""
        body = {
            "stream_id": stream_id,
            "opponent_stream_id": opponent,
            "duration_s": duration_s,
            "idempotency_key": f"battle-{next(_keys)}",
        }
        deadline = time.monotonic() + 5
        while True:
            response = self.http.post("/v1/battles", json=body, headers=self.as_streamer(stream_id))
            if response.status_code != 409 or time.monotonic() > deadline:
                break
        assert response.status_code == 201, response.text
        battle_id: str = response.json()["battle_id"]
        return battle_id

    def answer(self, battle_id: str, action: str, stream_id: str = "s2") -> dict[str, Any]:
        response = self.http.post(
            f"/v1/battles/{battle_id}/{action}", headers=self.as_streamer(stream_id)
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def gift_to(self, stream_id: str, user_id: str, gift_id: str, count: int = 1) -> None:
        response = self.http.post(
            f"/v1/streams/{stream_id}/gifts",
            json={"gift_id": gift_id, "count": count, "idempotency_key": f"g{next(_keys)}"},
            headers=bearer(user_id, Role.VIEWER, name=user_id.title()),
        )
        assert response.status_code == 200, response.text


@pytest.fixture
def arena(redis_url: str, tmp_path: Path) -> Iterator[Arena]:
    settings = dataclasses.replace(overlay_settings(redis_url, tmp_path), battles=BATTLES)
    running = Arena(settings, stream_id="s1")
    running.start("s1")
    running.start("s2")
    yield running
    running.close()
