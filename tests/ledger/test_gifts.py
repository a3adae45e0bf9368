"""The gift use case: the rules both edges share, checked before the script runs."""

from __future__ import annotations

import pytest

from gifting_server.auth import Identity, Role
from gifting_server.errors import ErrorCode
from gifting_server.ledger import gifts
from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, viewer
from tests.ledger.support import assert_refused


@pytest.fixture
async def live(store: Store) -> str:
    await fund(store, "alice")
    return await live_stream(store)


async def test_a_viewer_sends_a_catalog_gift_by_its_id(store: Store, live: str) -> None:
    receipt = await gifts.send_gift(store, viewer("alice"), live, "finger_heart", 3, "k1")
    assert (receipt.coins, receipt.combo, receipt.replayed) == (85, 3, False)


REFUSED: dict[str, tuple[Identity, str, int, str, ErrorCode]] = {
    "streamer token": (
        Identity("streamer1", "S", Role.STREAMER, True),
        "rose",
        1,
        "k",
        ErrorCode.FORBIDDEN,
    ),
    "overlay token": (Identity("o", "O", Role.OVERLAY, True), "rose", 1, "k", ErrorCode.FORBIDDEN),
    "unknown gift": (viewer("alice"), "unicorn", 1, "k", ErrorCode.UNKNOWN_GIFT),
    "zero": (viewer("alice"), "rose", 0, "k", ErrorCode.INVALID_REQUEST),
    "over max_gift_count": (viewer("alice"), "rose", 100, "k", ErrorCode.INVALID_REQUEST),
    "bad key": (viewer("alice"), "rose", 1, "a b", ErrorCode.INVALID_REQUEST),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_refused_before_the_script_and_nothing_changes(
    store: Store, live: str, case: str
) -> None:
    sender, gift_id, count, key, code = REFUSED[case]
    await assert_refused(store, code, gifts.send_gift(store, sender, live, gift_id, count, key))
