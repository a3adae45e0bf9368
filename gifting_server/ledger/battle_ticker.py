"""The battles' periodic work, run by one worker at a time (a lease any worker takes
over when its holder stops renewing it): every `[battles] tick_ms`, each live
battle's state is published to both streams when it changed (coalesced: at most one
`battle` event per tick), and every battle that is due (an invite's expiry, a
battle's end, a step a crash left behind) is advanced (`battle_steps.advance`)."""

from __future__ import annotations

import os
import uuid

from gifting_server.ledger import battle_record, battle_steps, keys
from gifting_server.ledger.store import Store, guarded
from gifting_server.tasks import for_each_stream

BATTLES_PER_TICK = 1000  # the most battles one tick looks at


class BattleTicker:
    def __init__(self, store: Store) -> None:
        self.store = store
        # The process id first: an operator (and a test) can tell which worker holds it.
        self.holder = f"{os.getpid()}:{uuid.uuid4().hex}"

    async def tick(self) -> None:
        store, due = self.store, keys.BATTLES_DUE
        # Read first: with no battle open, a tick writes nothing (not even the lease).
        entries = await guarded(
            store.scripts.command(due, "ZRANGE", due, 0, BATTLES_PER_TICK - 1, "WITHSCORES")
        )
        if not entries or not await self._leased():
            return
        now = store.clock()
        at_of = {str(entries[i]): float(entries[i + 1]) for i in range(0, len(entries), 2)}

        async def one(battle_id: str) -> None:
            record = await battle_record.read(store, battle_id)
            if record is None:  # a battle whose first step never ran
                if now >= at_of[battle_id]:
                    await guarded(store.scripts.command(due, "ZREM", due, battle_id))
                return
            if now >= at_of[battle_id]:
                await battle_steps.advance(store, record)
            elif record.status == "live":
                await battle_steps.publish(store, record)

        await for_each_stream(list(at_of), one)

    async def _leased(self) -> bool:
        """Take or renew the lease, for three ticks."""
        store, lease = self.store, keys.BATTLES_LEASE
        ttl = store.settings.battles.tick_ms * 3
        taken = await guarded(
            store.scripts.command(lease, "SET", lease, self.holder, "NX", "PX", ttl)
        )
        if taken:
            return True
        holder = await guarded(store.scripts.command(lease, "GET", lease))
        if holder != self.holder:
            return False
        await guarded(store.scripts.command(lease, "PEXPIRE", lease, ttl))
        return True
