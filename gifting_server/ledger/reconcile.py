"""The ledger audit: replay every journal and prove every invariant against Redis.

The journal is split per user (`{u:U}:journal`: their purchases, refunds and
cash-outs, and the gifts they received), each with the platform account of the gifts
in it (`{u:U}:platform`); the journal and account kept before the split,
`{ledger}:journal` and `{ledger}:platform`, are read too. The audit finds the
journals with SCAN (docs/scaling.md, "The ledger across slots") and replays them
merged into one sequence by entry id (time, then sequence), reading each in chunks:
every journal keeps its own order, and a streamer's gifts, whose order the creator
share depends on, are all in one journal. It rebuilds every balance and checks:
conservation per currency (minted - burned = outstanding, the platform accounts
included), that each wallet and each platform account replays from the journal,
that no balance is negative, that every gift has all its legs (debit = diamonds +
platform share, the creator share, `received`, the stream and all-time
leaderboards), that each entry is in the journal of the user it belongs to, and
that every payment event was credited exactly once, its global record and any
user's record (`{u:U}:payment:<event>`, a cluster's) backed by the journal; a claim
not applied (a crash between a cluster payment's steps) is listed, not failed; and
that every key a gift writes without reading it first has the type the gift writes
(the scripts leave that check to the audit: docs/performance.md). It never writes. Run it on a
quiet ledger: a gift landing between reading the journals and reading the wallets
shows as a difference (a gift across slots credited meanwhile, on its stream or its
streamer's side, is named as such: `MOVED_WHILE_READ`). `reconcile_main` then prints
the risk report (`risk.py`): warnings only.

The creator share is checked gift by gift, under the share each gift's entry records
(`share`; entries written before it was recorded are checked under the configured
one): the diamonds of a gift of c coins to a streamer who had received R before are
floor((R + c) * share / 10000) - floor(R * share / 10000). So a change of
`creator_share_bps` passes, and a gift credited otherwise fails.
"""

from __future__ import annotations

import asyncio
import heapq
import re
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from redis import exceptions as redis_errors

from gifting_server.config import Settings
from gifting_server.ledger import keys, transfers
from gifting_server.ledger.journal import records as journal_records
from gifting_server.ledger.reconcile_battles import BattlePoints  # ended battles' points
from gifting_server.ledger.reconcile_cashouts import CashoutLegs  # failed cash-outs' returns
from gifting_server.ledger.risk import RiskReport, RiskRules, RiskScan
from gifting_server.ledger.store import RedisClient, connect
from gifting_server.redis_topology import RedisUnreachable, detect

CURRENCIES = ("coins", "diamonds", "owed")
# Said of a transfer credited while the audit read: its other lines are not final.
MOVED_WHILE_READ = "credited while this audit read the ledger"
# The audit's reads, in order: `on_step` hears each name before that read begins.
READ_STEPS = (
    "outboxes",
    "journals",
    "transfers",
    "wallets",
    "platform",
    "leaderboards",
    "payments",
    "key types",
    "cashouts",
    "battles",
    "moved",
)
WALLET_FIELDS = ("coins", "diamonds", "owed", "received")
CHUNK = 1000
# The end of a payment record claimed but not applied (lua/include/payment_record.lua):
# "|pending", or "|pending|<n>" when n deliveries claimed it at once.
PENDING_RECORD = re.compile(r"\|pending(\|\d+)?$")
SHOWN = 50  # problems printed by `Report.format`
Ledger = defaultdict[str, Counter[str]]


@dataclass
class Totals:
    minted: int = 0
    burned: int = 0
    outstanding: int = 0


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    totals: dict[str, Totals] = field(default_factory=lambda: {c: Totals() for c in CURRENCIES})
    entries: int = 0  # records replayed: a send_gifts entry holds each gift of its call
    wallets: int = 0
    in_transit: int = 0  # coins of gifts debited and not yet credited (transfers.py)
    # Payment records claimed and not applied (a crash between the steps on a
    # cluster): no coin moved; not a problem, but worth a look if they stay.
    pending_payments: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        verdict = "OK" if self.ok else f"FAILED with {len(self.problems)} problem(s)"
        lines = [
            f"ledger reconcile {verdict}: {self.entries} journal entries, {self.wallets} wallets"
        ]
        for name, t in self.totals.items():
            lines.append(
                f"  {name:<8} minted {t.minted:>13,}  burned {t.burned:>13,}"
                f"  outstanding {t.outstanding:>13,}"
            )
        if self.in_transit:
            lines.append(
                f"  coins in transit (gifts debited, not yet credited): {self.in_transit:,}"
            )
        if self.pending_payments:
            shown = ", ".join(self.pending_payments[:SHOWN])
            lines.append(
                f"  {len(self.pending_payments)} payment(s) claimed, not applied"
                f" (awaiting the provider's retry): {shown}"
            )
        lines += [f"  - {problem}" for problem in self.problems[:SHOWN]]
        if len(self.problems) > SHOWN:
            lines.append(f"  ... and {len(self.problems) - SHOWN} more")
        return "\n".join(lines)


@dataclass
class _Replay:
    """Everything the journal says the ledger should hold: per user coins, diamonds, owed,
    and received; per stream and per streamer the coins each sender gave; per
    payment event the users it was credited to."""

    report: Report
    share_bps: int  # the share of gift entries that record none
    platform: Counter[str] = field(default_factory=Counter)  # account key -> coins
    accounts: Ledger = field(default_factory=lambda: defaultdict(Counter))
    stream_boards: Ledger = field(default_factory=lambda: defaultdict(Counter))
    channel_boards: Ledger = field(default_factory=lambda: defaultdict(Counter))
    payments: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    cashouts: CashoutLegs = field(default_factory=lambda: CashoutLegs())
    battles: BattlePoints = field(default_factory=lambda: BattlePoints())

    def apply(self, journal: str, entry_id: str, f: dict[str, str]) -> None:
        kind, user = f.get("type"), f.get("user", "")
        totals, problems = self.report.totals, self.report.problems
        entry_id = f"{journal} {entry_id}"
        owner = f.get("to", "") if kind == "gift" else user
        if journal != keys.LEGACY_JOURNAL and journal != keys.journal(owner):
            problems.append(f"journal: entry {entry_id} ({kind}) belongs to {owner!r}")
        try:
            if kind == "purchase":
                coins, settled = int(f["coins"]), int(f["settled"])
                self.payments[f["payment"]].append(user)
                self.accounts[user].update(coins=coins - settled, owed=-settled)
                totals["coins"].minted += coins
                totals["coins"].burned += settled
                totals["owed"].burned += settled
            elif kind == "refund":
                coins, clawed, owed = int(f["coins"]), int(f["clawed"]), int(f["owed"])
                if clawed + owed != coins or min(clawed, owed) < 0:
                    problems.append(
                        f"refund legs: refund {entry_id} of {user} takes {coins} coins "
                        f"but claws {clawed} + owes {owed}"
                    )
                self.payments[f["payment"]].append(user)
                self.accounts[user].update(coins=-clawed, owed=owed)
                totals["coins"].burned += clawed
                totals["owed"].minted += owed
            elif kind == "gift":
                coins, diamonds, share = int(f["coins"]), int(f["diamonds"]), int(f["platform"])
                streamer, stream = f["to"], f["stream"]
                if coins != diamonds + share or min(diamonds, share) < 0:
                    problems.append(
                        f"gift legs: gift {entry_id} from {user} to {streamer} debits {coins} "
                        f"coins but credits {diamonds} diamonds + {share} platform coins"
                    )
                bps = int(f.get("share", self.share_bps))
                before = self.accounts[streamer]["received"]
                due = (before + coins) * bps // 10_000 - before * bps // 10_000
                if diamonds != due:
                    problems.append(
                        f"creator share: gift {entry_id} to {streamer} credits {diamonds} "
                        f"diamonds for {coins} coins; at {bps} bps after {before} coins "
                        f"received it is {due}"
                    )
                self.accounts[user]["coins"] -= coins
                self.accounts[streamer].update(diamonds=diamonds, received=coins)
                self.platform[keys.platform_of_journal(journal)] += share
                self.stream_boards[stream][user] += coins
                self.channel_boards[streamer][user] += coins
                self.battles.gift(f, coins)
                totals["coins"].burned += diamonds
                totals["diamonds"].minted += diamonds
            elif kind == "cashout":
                diamonds = int(f["diamonds"])
                self.accounts[user]["diamonds"] -= diamonds
                totals["diamonds"].burned += diamonds
                self.cashouts.paid_out(user, f.get("cashout", ""), diamonds)
            elif kind == "cashout_failed":
                diamonds = int(f["diamonds"])
                self.accounts[user]["diamonds"] += diamonds
                totals["diamonds"].minted += diamonds
                self.cashouts.returned(problems, entry_id, user, f["cashout"], diamonds)
            else:
                problems.append(f"journal: entry {entry_id} has an unknown type {kind!r}")
        except (KeyError, ValueError):
            problems.append(f"journal: entry {entry_id} ({kind}) lacks a field or an integer")


async def reconcile(
    redis: RedisClient,
    share_bps: int,
    *,
    chunk: int = CHUNK,
    progress: Callable[[int], None] | None = None,
    on_entry: Callable[[str, dict[str, str]], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Report:
    """Audit the ledger behind `redis` (a client with decode_responses=True): one Redis,
    or a Redis Cluster, whose every master the SCANs read (redis-py's `scan_iter`).

    `share_bps` is the creator share of gift entries that record none (written before
    the share was journaled): the configured `economy.creator_share_bps`.
    `progress` hears the entries read so far, `on_entry` each entry as it is replayed
    (the risk report reads them there), `on_step` the name of each of `READ_STEPS`
    before it is read (what others do to the ledger between two reads is what the
    audit must tell apart from a defect).
    """
    step = on_step or (lambda name: None)
    report = Report()
    # Before anything else: the transfers a relay may finish while the audit reads.
    step("outboxes")
    before = await _uncredited(redis, Report(), await _outbox_transfers(redis, Report()))
    step("journals")
    replay = await _replay_journal(redis, report, share_bps, chunk, progress, on_entry)
    step("transfers")
    await _pending_transfers(redis, report, replay)
    step("wallets")
    users = sorted(
        {
            keys.user_of_wallet_key(key)
            async for key in redis.scan_iter(match=keys.WALLET_PATTERN, count=1000, _type="hash")
        }
    )
    report.wallets = len(users)
    users = sorted(set(users) | replay.accounts.keys())
    wallets = await _batched(
        redis, report, users, lambda p, u: p.hmget(keys.wallet(u), *WALLET_FIELDS)
    )
    for user, values in zip(users, wallets, strict=True):
        _check_wallet(report, replay, user, values or [None] * len(WALLET_FIELDS))

    step("platform")
    accounts = sorted(
        {keys.LEGACY_PLATFORM_ACCOUNT}
        | {key async for key in redis.scan_iter(match=keys.PLATFORM_PATTERN, count=1000)}
        | replay.platform.keys()
    )
    stored_platform = await _batched(redis, report, accounts, lambda p, k: p.hget(k, "coins"))
    for account, raw in zip(accounts, stored_platform, strict=True):
        where = f"platform account {account}"
        platform = _integer(report, where, "coins", raw)
        _compare(report, where, "coins", platform, replay.platform[account])
        report.totals["coins"].outstanding += platform

    for name, t in report.totals.items():
        if t.minted - t.burned != t.outstanding + (report.in_transit if name == "coins" else 0):
            report.problems.append(
                f"conservation: {name} minted {t.minted} - burned {t.burned} = "
                f"{t.minted - t.burned}, but {t.outstanding} are outstanding"
            )
    step("leaderboards")
    await _check_leaderboards(redis, report, replay, users)
    step("payments")
    await _check_payments(redis, report, replay)
    step("key types")
    await _check_key_types(redis, report)
    step("cashouts")
    await replay.cashouts.check_records(redis, report.problems)
    step("battles")
    await replay.battles.check_records(redis, report.problems)
    step("moved")
    await _moved_transfers(redis, report, before)
    return report


async def _check_key_types(redis: RedisClient, report: Report) -> None:
    """Every key a gift writes unread holds the type the gift writes: a key of another
    type makes the gifts that reach it fail after their first write (`keys.GIFT_WRITTEN_TYPES`)."""
    for pattern, wanted in keys.GIFT_WRITTEN_TYPES:
        found = sorted({key async for key in redis.scan_iter(match=pattern, count=1000)})
        types = await _batched(redis, report, found, lambda p, k: p.type(k))
        for key, have in zip(found, types, strict=True):
            if have not in (wanted, "none"):  # "none": deleted since the SCAN
                report.problems.append(
                    f"storage: {key} is a {have}, not a {wanted}: gifts that write it "
                    "fail halfway until it is repaired"
                )


async def _outbox_transfers(
    redis: RedisClient, report: Report
) -> list[tuple[str, transfers.Transfer]]:
    """Every transfer in an outbox, with its record (one gone or unreadable is a problem)."""
    outboxes = sorted([key async for key in redis.scan_iter(match=keys.OUTBOX_PATTERN, count=1000)])
    found = await _batched(redis, report, outboxes, lambda p, k: p.zrange(k, 0, -1))
    transfer_ids = [member for members in found if members for member in members]
    records = await _batched(
        redis,
        report,
        transfer_ids,
        lambda p, t: p.get(keys.idempotency(*t.split(":", 1))),
    )
    pending: list[tuple[str, transfers.Transfer]] = []
    for transfer_id, record in zip(transfer_ids, records, strict=True):
        try:
            pending.append((transfer_id, transfers.Transfer.decoded(str(record).split("\n", 3)[3])))
        except (IndexError, TypeError, ValueError):
            report.problems.append(
                f"gift transfer {transfer_id}: in an outbox, but its record is gone or "
                "unreadable: its coins left the sender and were never credited"
            )
    return pending


# Where a transfer is credited: on its stream (step 3), on its streamer's side (step 4).
Sides = tuple[bool, bool]


async def _sides(
    redis: RedisClient, report: Report, pending: list[tuple[str, transfers.Transfer]]
) -> list[Sides]:
    on_stream = await _credited(redis, report, pending, lambda t: keys.stream(t.stream))
    on_streamer = await _credited(redis, report, pending, lambda t: keys.wallet(t.streamer))
    return list(zip(on_stream, on_streamer, strict=True))


async def _uncredited(
    redis: RedisClient, report: Report, pending: list[tuple[str, transfers.Transfer]]
) -> list[tuple[str, transfers.Transfer, Sides]]:
    """Those of `pending` not yet credited on the streamer's side, with where they are."""
    sides = await _sides(redis, report, pending)
    return [(i, t, s) for (i, t), s in zip(pending, sides, strict=True) if not s[1]]


async def _pending_transfers(redis: RedisClient, report: Report, replay: _Replay) -> None:
    """Gifts across slots that were debited and not yet credited (their worker died, or
    they are in flight): each is a problem until the relay finishes it, and its coins,
    gone from the sender's wallet, count as in transit rather than missing. A worker
    may die between the steps: one credited on its stream only has its stream board
    bumped already, one credited on both sides is in the journal (only its outbox
    entry is left) and in transit no more."""
    pending = await _outbox_transfers(redis, report)
    sides = await _sides(redis, report, pending)
    for (transfer_id, transfer), (stream_done, streamer_done) in zip(pending, sides, strict=True):
        if streamer_done:
            report.problems.append(
                f"gift transfer {transfer_id}: credited, but still in its outbox "
                "(a running worker's relay clears it within seconds; run again)"
            )
            continue
        sender, coins = transfer.sender, transfer.coins
        replay.accounts[sender]["coins"] -= coins
        report.in_transit += coins
        if stream_done:
            replay.stream_boards[transfer.stream][sender] += coins
        report.problems.append(
            f"gift transfer {transfer_id}: {coins} coins debited from {sender}, not yet "
            "credited (a running worker's relay finishes it within seconds; run again)"
        )


async def _moved_transfers(
    redis: RedisClient, report: Report, before: list[tuple[str, transfers.Transfer, Sides]]
) -> None:
    """The audit's reads are not one snapshot: a transfer in transit when the audit
    began and credited on either side before it ended (a relay finishing it, or a
    worker between its steps: its stream credited, its streamer's side not yet) is
    counted in the figures read after that credit and not in those read before. Each
    one is named, so that the differences it makes are not taken for a defect."""
    now = await _sides(redis, report, [(i, t) for i, t, _ in before])
    for (transfer_id, _, then), sides in zip(before, now, strict=True):
        if sides != then:
            report.problems.append(
                f"gift transfer {transfer_id}: {MOVED_WHILE_READ} (the figures read after "
                "its credit count it, those read before do not; run again)"
            )


async def _credited(
    redis: RedisClient,
    report: Report,
    pending: list[tuple[str, transfers.Transfer]],
    side: Callable[[transfers.Transfer], str],
) -> list[bool]:
    """Whether each transfer's credited record exists on one side (`side`: a key of
    that side's slot)."""
    names = [keys.credited(side(t), t.credit_id) for _, t in pending]
    found = await _batched(redis, report, names, lambda p, k: p.exists(k))
    return [bool(n) for n in found]


async def _replay_journal(
    redis: RedisClient,
    report: Report,
    share_bps: int,
    chunk: int,
    progress: Callable[[int], None] | None,
    on_entry: Callable[[str, dict[str, str]], None] | None,
) -> _Replay:
    replay = _Replay(report, share_bps)
    journals = {key async for key in redis.scan_iter(match=keys.JOURNAL_PATTERN, count=1000)}
    async for name, entry_id, fields in _merged(
        redis, report, sorted(journals | {keys.LEGACY_JOURNAL}), chunk
    ):
        for named in journal_records(fields):  # a send_gifts call's gifts: one entry
            replay.apply(name, entry_id, named)
            if on_entry is not None:
                on_entry(entry_id, named)
            report.entries += 1
            if progress is not None and report.entries % chunk == 0:
                progress(report.entries)
    if progress is not None and (report.entries % chunk or not report.entries):
        progress(report.entries)
    return replay


Entry = tuple[str, dict[str, str]]


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def _merged(
    redis: RedisClient, report: Report, journals: list[str], chunk: int
) -> AsyncIterator[tuple[str, str, dict[str, str]]]:
    """Every entry of every journal, each journal in its own order, merged by entry id
    (ties by journal name). Holds at most one chunk per journal: the first chunks are
    read pipelined, a journal's next chunk when its last one is used up."""
    first = await _batched(redis, report, journals, lambda p, k: p.xrange(k, "-", "+", chunk))
    pending: dict[str, list[Entry]] = {}
    heap: list[tuple[tuple[int, int], str]] = []
    for journal, batch in zip(journals, first, strict=True):
        if batch:
            pending[journal] = list(reversed(cast(list[Entry], batch)))
            heapq.heappush(heap, (_order(pending[journal][-1][0]), journal))
    full = {journal for journal, batch in pending.items() if len(batch) == chunk}
    while heap:
        _, journal = heapq.heappop(heap)
        batch = pending[journal]
        entry_id, fields = batch.pop()
        yield journal, entry_id, fields
        if not batch and journal in full:
            try:
                raw = await redis.xrange(journal, min="(" + entry_id, max="+", count=chunk)
            except redis_errors.ResponseError as e:
                report.problems.append(f"storage: {journal} cannot be read: {e}")
                raw = []
            batch[:] = reversed(cast(list[Entry], raw or []))
            if len(batch) < chunk:
                full.discard(journal)
        if batch:
            heapq.heappush(heap, (_order(batch[-1][0]), journal))


async def _check_leaderboards(
    redis: RedisClient, report: Report, replay: _Replay, users: list[str]
) -> None:
    """Each stream's board and each streamer's all-time board hold the gift sums per sender."""
    metas = [key async for key in redis.scan_iter(match=keys.STREAM_PATTERN, count=1000)]
    streams = sorted({keys.stream_of_meta_key(k) for k in metas} | replay.stream_boards.keys())
    streamers = sorted(set(users) | replay.channel_boards.keys())
    boards = [keys.stream_leaderboard(s) for s in streams]
    boards += [keys.channel_leaderboard(t, "all") for t in streamers]
    wanted = [replay.stream_boards[s] for s in streams]
    wanted += [replay.channel_boards[t] for t in streamers]
    stored = await _batched(redis, report, boards, lambda p, b: p.zrange(b, 0, -1, withscores=True))
    for board, rows, want in zip(boards, stored, wanted, strict=True):
        if rows is None:
            continue  # a key of the wrong type, reported already
        have: dict[str, float] = dict(rows)
        for member in sorted(have.keys() | want.keys()):
            score = have.get(member, 0)
            if score != want[member]:
                shown = int(score) if float(score).is_integer() else score
                report.problems.append(
                    f"leaderboard: {board} gives {member} {shown} coins, "
                    f"but their gifts sum to {want[member]}"
                )


def _check_wallet(report: Report, replay: _Replay, user: str, values: list[Any]) -> None:
    expected = replay.accounts.get(user, Counter())
    for name, raw in zip(WALLET_FIELDS, values, strict=True):
        have = _integer(report, f"wallet {user}", name, raw)
        _compare(report, f"wallet {user}", name, have, expected[name])
        if name in report.totals:
            report.totals[name].outstanding += have


def _integer(report: Report, where: str, name: str, raw: Any) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        report.problems.append(f"storage: {where} {name} is not an integer: {raw!r}")
        return 0


def _compare(report: Report, where: str, name: str, have: int, want: int) -> None:
    if have < 0:
        report.problems.append(f"negative balance: {where} holds {name} {have}")
    if have != want:
        report.problems.append(
            f"balance replay: {where} holds {name} {have}, but the journal replays to {want}"
        )


async def _check_payments(redis: RedisClient, report: Report, replay: _Replay) -> None:
    for pid, users in replay.payments.items():
        if len(users) > 1:
            report.problems.append(
                f"payment: event {pid} is in the journal {len(users)} times ({', '.join(users)})"
            )
    records = [keys.payment_seen(pid) for pid in sorted(replay.payments)]
    found = await _batched(redis, report, records, lambda p, k: p.exists(k))
    for record, exists in zip(records, found, strict=True):
        if not exists:
            report.problems.append(
                f"payment: {record} is missing, so a redelivered event would be credited again"
            )
    journaled = set(records)
    unjournaled = [
        key
        async for key in redis.scan_iter(match=keys.payment_seen("*"), count=1000)
        if key not in journaled
    ]
    stored = await _batched(redis, report, unjournaled, lambda p, k: p.get(k))
    for key, record in zip(unjournaled, stored, strict=True):
        if isinstance(record, str) and PENDING_RECORD.search(record):
            # Claimed on a cluster, not applied: the provider's retry applies it.
            report.pending_payments.append(key)
        else:
            report.problems.append(f"payment: {key} has no entry in the journal")
    async for key in redis.scan_iter(match=keys.USER_PAYMENT_PATTERN, count=1000):
        user, event_id = keys.user_and_event_of_user_payment(key)
        if user not in replay.payments.get(event_id, ()):
            report.problems.append(f"payment: {key} has no entry in {user}'s journal")


async def _batched(
    redis: RedisClient, report: Report, items: list[str], command: Callable[[Any, str], Any]
) -> list[Any]:
    """One pipelined command per item; a key of the wrong type becomes a problem and None."""
    results: list[Any] = []
    for i in range(0, len(items), CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for item in items[i : i + CHUNK]:
                command(pipe, item)
            answers = await pipe.execute(raise_on_error=False)
        for item, answer in zip(items[i : i + CHUNK], answers, strict=True):
            if isinstance(answer, redis_errors.ResponseError):
                report.problems.append(f"storage: {item} cannot be read: {answer}")
                answer = None
            results.append(answer)
    return results


def _print_progress(entries: int) -> None:
    if entries and entries % (50 * CHUNK) == 0:
        print(f"reconcile: {entries:,} journal entries replayed", file=sys.stderr)


def reconcile_main(settings: Settings, redis_url: str) -> int:
    """`gifting-server reconcile`: print the report, then the risk report; 0 when every
    invariant holds, else 1. Risk findings are warnings: they never change the code.

    2 when the audit could not run (Redis unreachable). On a Redis Cluster it reads
    every master; run it on a stable cluster (a slot migrating meanwhile may hide keys
    from the SCANs).
    """
    try:
        detect(redis_url)
    except RedisUnreachable as e:
        print(f"error: cannot audit the ledger: {e}", file=sys.stderr)
        return 2
    rules = RiskRules(require_age_verification=settings.limits.require_age_verification)

    async def run() -> tuple[Report, RiskReport]:
        redis = await connect(redis_url, timeout_s=30.0)
        scan = RiskScan(rules)
        try:
            report = await reconcile(
                redis,
                settings.economy.creator_share_bps,
                progress=_print_progress,
                on_entry=scan.add,
            )
            return report, await scan.finish(redis)
        finally:
            await redis.aclose()

    try:
        report, risks = asyncio.run(run())
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as e:
        print(f"error: cannot audit the ledger, Redis is unreachable: {e}", file=sys.stderr)
        return 2
    print(report.format())
    print(risks.format())
    return 0 if report.ok else 1
