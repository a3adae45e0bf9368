"""Reading journal entries back (ledger/journal.py): a lone gift's entry, a send_gifts
call's entry of several gifts, the entries of named fields, and broken ones."""

from __future__ import annotations

import pytest

from gifting_server.ledger import journal


def packed(key: str, limit: str = "", unverified: str = "") -> str:
    return f"alice|streamer1|s1|rose|1|1|0|1|5000|7|1700000000000|{limit}|{unverified}|{key}"


def test_a_lone_gift_entry_is_one_record_with_its_battle() -> None:
    entry = {"g": packed("k1", limit="500"), "b": "b1|1700000000001"}
    (record,) = journal.records(entry)
    assert record == journal.fields(entry)
    assert record["key"] == "k1" and record["limit"] == "500" and "unverified" not in record
    assert (record["battle"], record["battle_at"]) == ("b1", "1700000000001")


def test_a_calls_entry_gives_each_gift_in_order_with_its_own_battle() -> None:
    entry = {
        "g": "\n".join([packed("k1"), packed("k2", unverified="1"), packed("k3")]),
        "b": "b1|1700000000001\n\nb1|1700000000002",  # k2 came after the battle's end
    }
    records = journal.records(entry)
    assert [r["key"] for r in records] == ["k1", "k2", "k3"]
    assert [r.get("battle") for r in records] == ["b1", None, "b1"]
    assert records[1]["unverified"] == "1" and "battle_at" not in records[1]
    assert records[2]["battle_at"] == "1700000000002"
    with pytest.raises(ValueError):
        journal.fields(entry)  # a reader of one record would lose the others


def test_an_entry_without_battles_and_one_of_named_fields() -> None:
    entry = {"g": packed("k1") + "\n" + packed("k2")}
    assert [r.get("battle") for r in journal.records(entry)] == [None, None]
    purchase = {"type": "purchase", "user": "alice", "coins": "100"}
    assert journal.records(purchase) == [purchase]


def test_a_broken_gift_is_reported_as_lacking_fields() -> None:
    # A gift that does not split, and battle values that do not line up with the gifts.
    assert journal.records({"g": "alice|streamer1"}) == [{"type": "gift"}]
    misaligned = {"g": packed("k1") + "\n" + packed("k2"), "b": "b1|1"}
    assert journal.records(misaligned) == [{"type": "gift"}, {"type": "gift"}]
