"""Fixtures of the outgoing-webhook tests (test_webhooks*.py): servers with fast
deliveries started on demand, a real receiver, and a client of the tests' Redis.
No other test here asks for them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.webhook_server import DEFAULTS
from tests.conftest import server_factory
from tests.topology import AsyncClient, async_client
from tests.webhook_receiver import Receiver, receiving


@pytest.fixture
def start(tmp_path: Path, redis_url: str) -> Iterator[Any]:
    """`start(webhooks={...}, ...)` → a running server, the sections over DEFAULTS."""
    with server_factory(tmp_path, DEFAULTS) as start_server:
        yield lambda **sections: start_server(redis_url, **sections)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as running:
        yield running


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[AsyncClient]:
    client = await async_client(redis_url, decode_responses=True)
    yield client
    await client.aclose()
