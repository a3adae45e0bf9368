--[[
  send_gift: one viewer sends `count` of one gift to a live stream.
  Checks everything first, then writes: debit coins, credit diamonds and the
  platform share, bump three leaderboards, advance the combo, journal, history,
  publish, remember the idempotency key. No write happens before the last check,
  and no call after the first write can fail on anything a client sends: every
  argument and every stored number used is validated first (codes 16, 17). Keys
  written without being read first are not type-checked (their six TYPE calls cost
  ~9% of the gift): a key of another type can only be planted by someone with Redis
  access, and `reconcile` names every such key (docs/performance.md). The platform
  account and the held bucket are added to with HINCRBY, unread, for the same reason.
  This is the hot path: every redis.call counts (BENCHMARKS.md has the figures).
  The journal entry records the creator share in force (`share`, basis points), so
  the audit checks each gift's diamonds under the share it was sent with; and, for
  the risk report, the sender's own daily limit when one is set (`limit`) and
  `unverified` when the sender has no age verification (only possible where the
  age rule is off).
  During a live battle of the stream (meta field `battle`, include "battle") the
  coins also count for the stream's side when Redis's TIME is before the battle's
  end; the journal entry then records the battle and that time (field `b`).
  Diamonds are held until ARGV[21], a release time the caller rounds up to a whole
  hour (never sooner than the holding period): one bucket per release hour in
  KEYS[5], whose released buckets are dropped when a new one starts.
  The journal entry and the platform share go to the streamer's slot, where the
  diamonds and the share are computed (from `received`): no key is written by
  every gift (docs/scaling.md, "The ledger across slots").

  send_gifts (include "gift") runs the same gift for the gifts of one flush in one
  call: change the two together. The sender's side (include "spend"), the stream's
  (include "combo") and the streamer's (include "earn") are shared with the steps of a gift across slots
  (debit_gift, credit_stream, credit_streamer), which a Redis Cluster runs.
  There is no week leaderboard to bump: a week's board is the sum of its seven day
  boards (streams.leaderboard), so day boards outlive their week.

  Input:
    KEYS[1]  idempotency record        {u:V}:idem:<key>
    KEYS[2]  viewer wallet             {u:V}:wallet
    KEYS[3]  stream meta               {s:S}:meta  (field webhook_log: see emitEvent)
    KEYS[4]  streamer wallet           {u:T}:wallet
    KEYS[5]  streamer's held diamonds  {u:T}:held   (release unix ms -> diamonds)
    KEYS[6]  platform account          {u:T}:platform  (its share of gifts to T)
    KEYS[7]  stream leaderboard        {s:S}:lb
    KEYS[8]  channel leaderboard, day  {u:T}:lb:day:<n>
    KEYS[9]  channel leaderboard, all  {u:T}:lb:all
    KEYS[10] open streaks              {s:S}:streaks
    KEYS[11] journal                   {u:T}:journal   (T's, in the order T received)
    KEYS[12] stream history            {s:S}:history
    KEYS[13] the stream's battle top   {s:S}:battle_top  (include "battle")
    ARGV[1]  sender id          ARGV[2]  sender display name
    ARGV[3]  streamer id the caller expects to own the stream
    ARGV[4]  gift id            ARGV[5]  count        ARGV[6]  coins: count x price
    ARGV[7]  request fingerprint (stream|gift|count) for the idempotency check
    ARGV[8]  now, unix ms       ARGV[9]  sender is age-verified (1/0)
    ARGV[10] age verification required (1/0)
    ARGV[11] creator share, basis points
    ARGV[12] combo quiet window, ms
    ARGV[13] gift rate per second   ARGV[14] gift burst
    ARGV[15] idempotency ttl, ms    ARGV[16] history length cap
    ARGV[17] event JSON fragment: "sender":{..},"gift":{..},
    ARGV[18] pub/sub channel    ARGV[19] idempotency key   ARGV[20] stream id
    ARGV[21] diamonds earned now are held until this unix ms (0: not held)

  Output:
    {0, event_id, coins_left, combo, replayed(0/1), diamonds}
    When this gift starts a new streak while the sender's previous streak of the
    same gift is still open, that streak's `streak_end` event is emitted first.
    {1}  IDEMPOTENCY_CONFLICT       {2}  UNKNOWN_STREAM
    {3}  STREAM_NOT_LIVE            {4}  SELF_GIFT
    {5}  AGE_VERIFICATION_REQUIRED  {6}  INSUFFICIENT_FUNDS
    {7}  DAILY_LIMIT_EXCEEDED       {8}  RATE_LIMITED
    {16} INVALID_ARGUMENT (an ARGV number is missing or out of range; nothing written)
    {17} CORRUPT_VALUE (a stored number is not an integer; nothing written)
]]
--- @include "numbers"
--- @include "event"
--- @include "spend"
--- @include "combo"
--- @include "earn"
--- @include "battle"

-- KEYS and ARGV as locals: a global is a table lookup at each use, ~40 here
-- (docs/performance.md, "Per call").
local KEYS, ARGV = KEYS, ARGV

local idemKey, walletKey, streamKey, streamerKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local heldKey, platformKey, streamBoardKey = KEYS[5], KEYS[6], KEYS[7]
local dayBoardKey, allBoardKey = KEYS[8], KEYS[9]
local streaksKey, journalKey, historyKey = KEYS[10], KEYS[11], KEYS[12]
local battleTopKey = KEYS[13]

local sender, senderName, expectedStreamer = ARGV[1], ARGV[2], ARGV[3]
-- Numbers that go back to Redis as they came are passed on as the strings they
-- are: Redis formats a Lua number with %.17g, which costs more than the call.
local giftId, countArg, costArg = ARGV[4], ARGV[5], ARGV[6]
local fingerprint, nowArg = ARGV[7], ARGV[8]
local isAdult, needAdult = ARGV[9] == '1', ARGV[10] == '1'
local shareArg, idemTtl, historyMax, heldUntilArg = ARGV[11], ARGV[15], ARGV[16], ARGV[21]
local eventFragment, channel, idemName, streamId = ARGV[17], ARGV[18], ARGV[19], ARGV[20]


-- 0. Arguments. A value Redis would refuse at a later write (SET PX, XADD MAXLEN,
-- ZINCRBY of the coins)
-- or arithmetic on a missing number must stop the gift here, before any write; so
-- must a time or a bucket that would be stored as no integer. (tonumber gives nil
-- for a missing or non-numeric argument; n % 1 is NaN for inf and NaN.)
local count, cost, now = tonumber(countArg), tonumber(costArg), tonumber(nowArg)
local shareBps, comboWindow = tonumber(shareArg), tonumber(ARGV[12])
local ratePerS, burst = tonumber(ARGV[13]), tonumber(ARGV[14])
local heldUntil = tonumber(heldUntilArg)
if not (count and cost and now and shareBps and comboWindow and ratePerS and burst and heldUntil
    and digits(costArg) and shareBps >= 0 and shareBps <= 10000
    and digits(idemTtl) and idemTtl ~= '0'
    and digits(historyMax) and now % 1 == 0 and now >= 0 and now <= 9007199254740991
    and heldUntil % 1 == 0 and heldUntil >= 0 and heldUntil <= 9007199254740991) then
  return {16}
end

-- 1. Idempotency: the same key answers the first result again.
local seen = call('GET', idemKey)
if seen then
  local fp, eventId, coinsLeft, combo = string.match(seen, '^(.*)|(%d+)|(%d+)|(%d+)$')
  if fp ~= fingerprint then return {1} end
  return {0, tonumber(eventId), tonumber(coinsLeft), tonumber(combo), 1, 0}
end

-- 2. The stream, and the sender's combo of this gift on it. A stored number that
-- does not parse (nil) is refused here, not left to fail after the first write.
local comboField = 'c:' .. sender .. ':' .. giftId
local meta = call('HMGET', streamKey, 'streamer', 'status', 'seq', 'coins', comboField,
  'webhook_log', 'battle')
if not meta[1] or meta[1] ~= expectedStreamer then return {2} end
if meta[2] ~= 'live' then return {3} end
if meta[1] == sender then return {4} end
if needAdult and not isAdult then return {5} end
local seq, streamCoins = tonumber(meta[3] or '0'), tonumber(meta[4] or '0')
local lastCombo, lastTap, fragmentAt = parseCombo(meta[5])
if not (seq and streamCoins) or lastCombo == nil then return {17} end

-- 3. The sender's wallet: rate limit, balance, own daily budget.
local w = call('HMGET', walletKey, 'coins', 'limit', 'spent', 'spent_day',
  'rl_at', 'rl_tokens')
local day, dayText = utcDay(now)
local coinsLeft, spent, refilledAt, tokens, budgetDays, spentDay, spentBefore =
  checkSpend(walletKey, w, now, nowArg, day, dayText, cost, ratePerS, burst)
if not coinsLeft then return {spent} end

-- 4. The streamer's side: diamonds, the hold, the platform's share.
local diamonds, platformShare, received, totalDiamonds = checkEarn(streamerKey, cost, shareBps)
if not diamonds then return {platformShare} end

-- 5. The stream's battle, when it is in one (reads only).
local battle = meta[7] and battleOf(meta[7])

-- All checks passed: write. The history comes first: its entry ids must grow, so
-- a stream meta restored behind its history makes that XADD fail; as the first
-- write, it fails with nothing changed. No later call can fail on anything a client
-- sends (a key planted with another type or value can: see the header).
local coinsTotal = streamCoins + cost
local eventId, id, combo, comboText, tapText, coinsTotalText = emitGift(historyKey, historyMax,
  channel, streaksKey, comboField, seq, streamCoins, coinsTotal, count, countArg,
  lastCombo, lastTap, meta[5], fragmentAt, now, nowArg, comboWindow, eventFragment, meta[6])

writeEarn(streamerKey, heldKey, platformKey, heldUntil, heldUntilArg, now, diamonds,
  platformShare, received, totalDiamonds)
local coinsLeftText = writeSpend(walletKey, senderName, coinsLeft, spent, refilledAt,
  tokens, budgetDays, spentDay, spentBefore)

call('ZINCRBY', streamBoardKey, costArg, sender)
bumpChannelBoards(dayBoardKey, allBoardKey, costArg, cost, sender)
journalGift(journalKey, sender, meta[1], streamId, giftId, countArg, costArg, diamonds,
  platformShare, shareArg, id, idemName, nowArg, w[2], isAdult, battle)
if battle then countBattle(streamKey, battleTopKey, costArg, sender) end

-- The combo outlives its window so that close_streaks can still announce its end.
call('HSET', streamKey, 'seq', id, 'coins', coinsTotalText,
  comboField, comboText .. '|' .. tapText .. '|' .. eventFragment)
call('PSETEX', idemKey, idemTtl,
  fingerprint .. '|' .. id .. '|' .. coinsLeftText .. '|' .. comboText)
return {0, eventId, coinsLeft, combo, 0, diamonds}
