from __future__ import annotations

import httpx

from gifting_server.auth import Role
from gifting_server.ledger import gifts, wallet
from gifting_server.ledger.store import Store
from tests.factories import auth, fund, live_stream, viewer


async def test_gift_over_ledger_debits_sender_and_credits_streamer(store: Store) -> None:
    await fund(store, "alice")
    stream = await live_stream(store)
    rose = store.settings.gift("rose")
    assert rose is not None
    receipt = await gifts.run_send_gift(store, viewer("alice"), stream, rose, 3, "k1")
    assert (receipt.event_id, receipt.coins, receipt.combo) == (1, 97, 3)
    streamer = await wallet.read_wallet(store, "streamer1")
    assert streamer["diamonds"] == 1  # floor(3 * 50%)


async def test_gift_over_http_answers_contract_shape(store: Store, http: httpx.AsyncClient) -> None:
    await fund(store, "alice")
    await live_stream(store)
    response = await http.post(
        "/v1/streams/s1/gifts",
        json={"gift_id": "rose", "count": 1, "idempotency_key": "k"},
        headers=auth("alice"),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"event_id": 1, "coins": 99, "combo": 1}
    wallet_response = await http.get("/v1/wallet", headers=auth("alice", Role.VIEWER))
    assert wallet_response.json()["coins"] == 99
