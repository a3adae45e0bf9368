"""The ledger's tests run both ways a gift can reach Redis: one send_gift script (one
Redis) and the steps of a transfer across slots (a cluster; ledger/transfers.py),
which `gifts_across_slots` runs on one Redis too."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gifting_server.config import Settings
from tests.conftest import make_settings
from tests.topology import on_cluster

# On a cluster a gift always takes the steps across slots (Store.gifts_across_slots): the
# one script is the single Redis's path, so a cluster run has only the steps.
GIFT_PATHS = {"across slots": True} if on_cluster() else {"one script": False, "across slots": True}


@pytest.fixture(params=GIFT_PATHS.values(), ids=GIFT_PATHS.keys())
def settings(redis_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    return dataclasses.replace(make_settings(redis_url, tmp_path), gifts_across_slots=request.param)


def one_script_only(store_or_settings: object, why: str) -> None:
    """Skip a test of what only the one-script gift promises, saying which test covers
    the steps' own behaviour."""
    settings = getattr(store_or_settings, "settings", store_or_settings)
    if getattr(settings, "gifts_across_slots", False) or getattr(
        store_or_settings, "gifts_across_slots", False
    ):
        pytest.skip(why)
