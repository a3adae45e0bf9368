"""The audit of battles' points (`reconcile.py` replays the journal and calls this).

A gift counted in a battle has the battle in its journal entry (journal.py: `battle`,
`battle_at`), written in the same script as the points it adds on one Redis, and by
the streamer's step of the same transfer on a cluster. So each side of an ended
battle must show exactly the coins of the journal's gifts to that stream counted for
that battle, and no counted gift may be timed at or after the battle's end.
"""

from __future__ import annotations

from collections import Counter

import orjson

from gifting_server.ledger import keys
from gifting_server.ledger.store import RedisClient


class BattlePoints:
    def __init__(self) -> None:
        self.counted: Counter[tuple[str, str]] = Counter()  # (battle, stream) -> coins
        self.last_at: dict[str, int] = {}  # battle -> the latest counted gift's time

    def gift(self, entry: dict[str, str], coins: int) -> None:
        battle = entry.get("battle")
        if battle:
            self.counted[(battle, entry["stream"])] += coins
            at = int(entry.get("battle_at") or 0)
            self.last_at[battle] = max(at, self.last_at.get(battle, 0))

    async def check_records(self, redis: RedisClient, problems: list[str]) -> None:
        async for key in redis.scan_iter(match=keys.BATTLE_PATTERN, count=1000):
            battle_id = str(key).partition(":battle:")[2]
            status, final, ends_at = await redis.hmget(key, ["status", "final", "ends_at"])
            if status != "ended":
                continue
            try:
                sides = orjson.loads(final or "")
                shown = {str(side["stream_id"]): int(side["points"]) for side in sides}
            except (TypeError, ValueError, KeyError):
                problems.append(f"battle {battle_id}: its final points do not parse")
                continue
            for stream_id, points in shown.items():
                journaled = self.counted[(battle_id, stream_id)]
                if points != journaled:
                    problems.append(
                        f"battle {battle_id}: {stream_id} shows {points} points, but the "
                        f"journal counted {journaled} coins of gifts for it"
                    )
            if ends_at and self.last_at.get(battle_id, 0) >= int(ends_at):
                problems.append(f"battle {battle_id}: a gift counted at or after its end")
