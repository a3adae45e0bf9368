from __future__ import annotations

import pytest

from gifting_server.redis_topology import (
    RedisUnreachable,
    Topology,
    detect,
    detect_async,
    redacted,
)
from tests.redis_process import free_port


def test_a_single_redis_is_detected_as_single(redis_url: str) -> None:
    assert detect(redis_url) is Topology.SINGLE


async def test_a_single_redis_is_detected_as_single_from_async_code(redis_url: str) -> None:
    assert await detect_async(redis_url) is Topology.SINGLE


def test_an_unreachable_redis_is_a_clear_error_without_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnreachable, match="unreachable") as raised:
        detect(url, timeout_s=0.5)
    assert "hunter2" not in str(raised.value)
    assert "GIFTING_REDIS_URL" in str(raised.value)


async def test_an_unreachable_redis_is_a_clear_error_from_async_code() -> None:
    with pytest.raises(RedisUnreachable, match="unreachable"):
        await detect_async(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)


def test_urls_are_redacted_only_where_they_hold_a_password() -> None:
    assert redacted("redis://127.0.0.1:6380/0") == "redis://127.0.0.1:6380/0"
    assert redacted("redis://app:secret@db:6379/0") == "redis://app:***@db:6379/0"
    assert redacted("rediss://:secret@db:6379") == "rediss://:***@db:6379"
