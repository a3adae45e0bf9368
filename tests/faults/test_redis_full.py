"""Redis at `maxmemory` with `noeviction`: every write is refused with a clean 503
`service_unavailable` (never a 500), both balances stay as they were, and once
there is room again the same keys go through, charged once."""

from __future__ import annotations

import httpx

from gifting_server.auth import Role
from tests.api import assert_error
from tests.factories import auth, post_webhook, token
from tests.faults import (
    assert_reconciled,
    balances,
    buy,
    go_live,
    money_state,
    purchase,
    send_gift,
)
from tests.faults.conftest import Serve
from tests.hub.wsclient import WsClient
from tests.topology import AsyncClient, RedisUnderFault, config_set_everywhere


async def test_full_redis_refuses_cleanly_and_changes_no_balance(
    own_redis: RedisUnderFault, own_client: AsyncClient, serve: Serve
) -> None:
    server = serve(own_redis.url)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        await WsClient.open(server.url, token("alice")) as sender,
    ):
        await go_live(http, "s1")
        await buy(http, "alice", "coins_1000")
        assert (await send_gift(http, "alice", "before", "hand_hearts")).status_code == 200
        before = await money_state(own_client)

        await config_set_everywhere(own_client, "maxmemory-policy", "noeviction")
        await config_set_everywhere(own_client, "maxmemory", 1)  # any write is over the limit
        try:
            gift = await send_gift(http, "alice", "when-full", "hand_hearts")
            assert_error(gift, 503, "service_unavailable")
            assert "full" in gift.json()["error"]["message"]
            payment = await post_webhook(http, dict(purchase("pay-when-full", "alice")))
            assert_error(payment, 503, "service_unavailable")
            cashout = await http.post(
                "/v1/cashouts",
                json={"diamonds": 2000, "idempotency_key": "co-when-full"},
                headers=auth("streamer1", Role.STREAMER),
            )
            assert_error(cashout, 402, "insufficient_diamonds")  # its own reason: no write needed
            answer = await sender.gift("s1", "hand_hearts", id="ws-when-full")
            assert (answer["type"], answer["code"]) == ("error", "service_unavailable"), answer
            # Reads still work, and show nothing moved.
            wallet = await http.get("/v1/wallet", headers=auth("alice"))
            assert wallet.status_code == 200, wallet.text
            assert wallet.json()["coins"] == 900
            assert await money_state(own_client) == before
        finally:
            await config_set_everywhere(own_client, "maxmemory", 0)

        assert (await send_gift(http, "alice", "when-full", "hand_hearts")).status_code == 200
        ack = await sender.gift("s1", "hand_hearts", id="ws-when-full")
        assert ack["type"] == "ack", ack
        assert (await post_webhook(http, dict(purchase("pay-when-full", "alice")))).is_success
        after = await balances(own_client, "alice", "streamer1")
        assert (int(after["alice"]["coins"]), int(after["streamer1"]["diamonds"])) == (800, 150)
        await assert_reconciled(own_client)
        sender.assert_no_traceback()
