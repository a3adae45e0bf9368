"""The risk report of `gifting-server reconcile`: patterns that break no ledger
invariant but deserve a person's look. Every finding is a warning; it never
changes the audit's exit code.

- income out of line with viewers: a stream's gift income above `coins_per_viewer`
  for each viewer it ever had (the peak of its `viewers` events, at least one);
- one payer, many accounts: a payment source (the webhook's optional `payer_id`)
  that bought coins for more than `accounts_per_payer` users;
- a budget breached: a user's gifts of one UTC day passing the daily limit they
  had set when they sent them (the journal records it with each gift);
- the age rule breached: gifts by senders without age verification while the
  rule is on (the journal marks them `unverified`).

`RiskScan.add` takes each journal entry as the audit replays it; `finish` reads
the viewer counts of the streams that received gifts and returns the report.
"""

from __future__ import annotations

import datetime
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from gifting_server import events
from gifting_server.ledger import keys, presence
from gifting_server.ledger.clock import DAY_MS, day_number
from gifting_server.ledger.store import RedisClient

SHOWN_NAMES = 5  # accounts or senders named in one warning


@dataclass(frozen=True)
class RiskRules:
    coins_per_viewer: int = 50_000  # gift income per peak viewer above which a stream is flagged
    accounts_per_payer: int = 3  # accounts one payer may fund before it is flagged
    require_age_verification: bool = True


@dataclass
class RiskReport:
    warnings: list[str] = field(default_factory=list)

    def format(self) -> str:
        if not self.warnings:
            return "risk report: nothing to flag"
        lines = [f"risk report: {len(self.warnings)} warning(s) (they do not fail the audit)"]
        return "\n".join(lines + [f"  ! {warning}" for warning in self.warnings])


@dataclass
class _Stream:
    coins: int = 0
    senders: set[str] = field(default_factory=set)


@dataclass
class RiskScan:
    rules: RiskRules = field(default_factory=RiskRules)
    streams: defaultdict[str, _Stream] = field(default_factory=lambda: defaultdict(_Stream))
    funded_by: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    spent: Counter[tuple[str, int]] = field(default_factory=Counter)  # (user, day) → coins
    over_budget: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    unverified: Counter[str] = field(default_factory=Counter)

    def add(self, entry_id: str, fields: dict[str, str]) -> None:
        """One journal entry, in journal order. Entries the audit reports as broken
        (a field missing, not an integer) are skipped here."""
        try:
            if fields.get("type") == "purchase" and fields.get("payer"):
                self.funded_by[fields["payer"]][fields["user"]] += int(fields["coins"])
            elif fields.get("type") == "gift":
                self._gift(fields)
        except (KeyError, ValueError):
            return

    def _gift(self, fields: dict[str, str]) -> None:
        user, coins = fields["user"], int(fields["coins"])
        stream = self.streams[fields["stream"]]
        stream.coins += coins
        stream.senders.add(user)
        day = day_number(int(fields["at"]))
        self.spent[user, day] += coins
        if "limit" in fields and self.spent[user, day] > int(fields["limit"]):
            self.over_budget.setdefault((user, day), (self.spent[user, day], int(fields["limit"])))
        if fields.get("unverified") == "1":
            self.unverified[user] += 1

    async def finish(self, redis: RedisClient) -> RiskReport:
        """The report, once every entry was added (`redis` decodes responses)."""
        report = RiskReport()
        for stream_id in sorted(self.streams):
            stream = self.streams[stream_id]
            viewers = await peak_viewers(redis, stream_id)
            if stream.coins > self.rules.coins_per_viewer * max(viewers, 1):
                report.warnings.append(
                    f"income: stream {stream_id} received {stream.coins:,} coins from "
                    f"{len(stream.senders)} sender(s) ({_names(stream.senders)}) but had at "
                    f"most {viewers} viewer(s): over {self.rules.coins_per_viewer:,} per viewer"
                )
        for payer in sorted(self.funded_by):
            accounts = self.funded_by[payer]
            if len(accounts) > self.rules.accounts_per_payer:
                report.warnings.append(
                    f"payer: {payer} bought {sum(accounts.values()):,} coins for "
                    f"{len(accounts)} accounts ({_names(accounts)})"
                )
        for (user, day), (spent, limit) in sorted(self.over_budget.items()):
            report.warnings.append(
                f"budget: {user} gave {spent:,} coins on {_date(day)}, past the daily limit "
                f"of {limit:,} they had set"
            )
        if self.rules.require_age_verification:
            for user, gifts in sorted(self.unverified.items()):
                report.warnings.append(
                    f"age rule: {user} sent {gifts} gift(s) without age verification "
                    "(the rule was off when they were sent)"
                )
        return report


async def peak_viewers(redis: RedisClient, stream_id: str) -> int:
    """The most viewers a stream is known to have had: its `viewers` events still in
    the history, the last count published and the presence the workers report now."""
    counts = [0]
    rows: list[tuple[str, dict[str, str]]] = await redis.xrange(  # type: ignore[assignment]
        keys.stream_history(stream_id)
    )
    for _, fields in rows:
        for raw in events.history_events(fields.get("e", "").encode()):
            try:
                event = events.parse(raw)
            except ValueError:
                continue  # not an event: no count in it
            if event["kind"] == "viewers":
                counts.append(int(event.get("count", 0)))
    last = await redis.hget(keys.stream(stream_id), "last_viewers")
    if isinstance(last, str) and last.startswith('"count":'):
        counts.append(int(last.removeprefix('"count":')))
    entries = await redis.hgetall(keys.presence(stream_id))
    counts.append(sum(presence.parse_entry(str(value))[0] for value in entries.values()))
    return max(counts)


def _names(users: set[str] | Counter[str]) -> str:
    names = sorted(users)
    more = f", and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more


def _date(day: int) -> str:
    return datetime.datetime.fromtimestamp(day * DAY_MS / 1000, datetime.UTC).date().isoformat()
