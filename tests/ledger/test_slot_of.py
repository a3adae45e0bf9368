"""A script call's slot, from its keys' hash tags (`cluster_pipeline.slot_of`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from gifting_server.ledger.cluster_pipeline import CrossSlotCall, hash_tag, slot_of

# Keys made mostly of braces, so that tags begin, end, nest and stay empty.
KEYS = st.text(alphabet="{}ab:", max_size=10)


@given(KEYS)
def test_a_keys_hash_tag_hashes_to_its_slot_as_redis_computes_it(key: str) -> None:
    assert key_slot(hash_tag(key).encode()) == key_slot(key.encode())


@given(st.lists(KEYS, min_size=1, max_size=6))
def test_a_calls_slot_is_its_keys_one_slot_or_the_call_is_refused(keys: list[str]) -> None:
    slots = {key_slot(key.encode()) for key in keys}
    if len(slots) == 1:
        assert slot_of(keys) == slots.pop()
    else:
        with pytest.raises(CrossSlotCall):
            slot_of(keys)


def test_a_call_without_keys_is_refused() -> None:
    with pytest.raises(CrossSlotCall):
        slot_of([])
