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
  Diamonds are held until ARGV[21], a release time the caller rounds up to a whole
  hour (never sooner than the holding period): one bucket per release hour in
  KEYS[5], whose released buckets are dropped when a new one starts.
  The journal entry and the platform share go to the streamer's slot, where the
  diamonds and the share are computed (from `received`): no key is written by
  every gift (docs/scaling.md, "The ledger across slots").

  The gift itself is include "gift", shared with send_gifts (the gifts of one
  flush in one call). The sender's side (include "spend"), the stream's (include
  "combo") and the streamer's (include "earn") are shared with the steps of a gift across slots
  (debit_gift, credit_stream, credit_streamer), which a Redis Cluster runs.
  There is no week leaderboard to bump: a week's board is the sum of its seven day
  boards (streams.leaderboard), so day boards outlive their week.

  Input:
    KEYS[1]  idempotency record        {u:V}:idem:<key>
    KEYS[2]  viewer wallet             {u:V}:wallet
    KEYS[3]  stream meta               {s:S}:meta
    KEYS[4]  streamer wallet           {u:T}:wallet
    KEYS[5]  streamer's held diamonds  {u:T}:held   (release unix ms -> diamonds)
    KEYS[6]  platform account          {u:T}:platform  (its share of gifts to T)
    KEYS[7]  stream leaderboard        {s:S}:lb
    KEYS[8]  channel leaderboard, day  {u:T}:lb:day:<n>
    KEYS[9]  channel leaderboard, all  {u:T}:lb:all
    KEYS[10] open streaks              {s:S}:streaks
    KEYS[11] journal                   {u:T}:journal   (T's, in the order T received)
    KEYS[12] stream history            {s:S}:history
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
--- @include "gift"

-- 0. The configuration. A value Redis would refuse at a later write (SET PX, XADD
-- MAXLEN) or arithmetic on a missing number must stop the gift here, before any write.
local shareArg, idemTtl, historyMax = ARGV[11], ARGV[15], ARGV[16]
local shareBps, comboWindow = tonumber(shareArg), tonumber(ARGV[12])
local ratePerS, burst = tonumber(ARGV[13]), tonumber(ARGV[14])
if not (shareBps and comboWindow and ratePerS and burst and shareBps >= 0 and shareBps <= 10000
    and digits(idemTtl) and idemTtl ~= '0' and digits(historyMax)) then
  return {16}
end

-- Numbers that go back to Redis as they came are passed on as the strings they
-- are: Redis formats a Lua number with %.17g, which costs more than the call.
return giftOne(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8],
  KEYS[9], KEYS[10], KEYS[11], KEYS[12], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
  ARGV[6], ARGV[7], ARGV[8], ARGV[9] == '1', ARGV[17], ARGV[18], ARGV[19], ARGV[20], ARGV[21],
  ARGV[10] == '1', shareArg, shareBps, comboWindow, ratePerS, burst, idemTtl, historyMax)
