--[[
  send_gift: one viewer sends `count` of one gift to a live stream.
  Checks everything first, then writes: debit coins, credit diamonds and the
  platform share, bump three leaderboards, advance the combo, journal, history,
  publish, remember the idempotency key. No write happens before the last check,
  and no call after the first write can fail: every argument and every stored
  number used is validated first (codes 16, 17).
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

  The combo of (sender, gift) lives in a field of the stream meta,
  "c:<sender>:<gift>" = "<combo>|<last tap ms>|<event fragment>", so reading and
  advancing it costs no call of its own; the open-streaks set is only touched
  when a streak starts (close_streaks pushes the deadline of a streak that went on).
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
    {15} WRONG_KEY_TYPE (a key we write holds another type; nothing written)
    {16} INVALID_ARGUMENT (an ARGV number is missing or out of range; nothing written)
    {17} CORRUPT_VALUE (a stored number is not an integer; nothing written)
]]
--- @include "numbers"
--- @include "event"

local idemKey, walletKey, streamKey, streamerKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local heldKey, platformKey, streamBoardKey = KEYS[5], KEYS[6], KEYS[7]
local dayBoardKey, allBoardKey = KEYS[8], KEYS[9]
local streaksKey, journalKey, historyKey = KEYS[10], KEYS[11], KEYS[12]

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
local seen = redis.call('GET', idemKey)
if seen then
  local fp, eventId, coinsLeft, combo = string.match(seen, '^(.*)|(%d+)|(%d+)|(%d+)$')
  if fp ~= fingerprint then return {1} end
  return {0, tonumber(eventId), tonumber(coinsLeft), tonumber(combo), 1, 0}
end

-- 2. The stream, and the sender's combo of this gift on it. A stored number that
-- does not parse (nil) is refused here, not left to fail after the first write.
local comboField = 'c:' .. sender .. ':' .. giftId
local meta = redis.call('HMGET', streamKey, 'streamer', 'status', 'seq', 'coins', comboField)
if not meta[1] or meta[1] ~= expectedStreamer then return {2} end
if meta[2] ~= 'live' then return {3} end
if meta[1] == sender then return {4} end
if needAdult and not isAdult then return {5} end
local seq, streamCoins = tonumber(meta[3] or '0'), tonumber(meta[4] or '0')
if not (seq and streamCoins) then return {17} end
local lastCombo, lastTap, lastFragment
if meta[5] then
  local n, at
  n, at, lastFragment = string.match(meta[5], '^(%d+)|(%d+)|(.*)$')
  lastCombo, lastTap = tonumber(n), tonumber(at)
  if not (lastCombo and lastTap) then return {17} end
end

-- 3. The sender's wallet: rate limit, balance, own daily budget. The budget keeps
-- the coins spent on `spent_day` and on the day before (`spent_before`): a gift that
-- reaches Redis after one of the next UTC day (clocks differ by milliseconds across
-- workers) counts on its own day and never resets the newer one.
local w = redis.call('HMGET', walletKey, 'coins', 'limit', 'spent', 'spent_day',
  'rl_at', 'rl_tokens', 'spent_before')
-- Optional fields: false when absent, nil when they do not parse.
local limit, spentDay, rlAt = w[2] and tonumber(w[2]), w[4] and tonumber(w[4]), w[5] and tonumber(w[5])
local coins, spent = tonumber(w[1] or '0'), tonumber(w[3] or '0')
local rlTokens, spentBefore = tonumber(w[6] or '0'), tonumber(w[7] or '0')
if not (coins and spent and rlTokens and spentBefore) or limit == nil or spentDay == nil
    or rlAt == nil then
  return {17}
end
local day = math.floor(now / 86400000)
local tokens, refilledAt = burst * 1000, now
if rlAt then
  -- Concurrent gifts may reach Redis out of clock order: time never runs backwards
  -- for the bucket, so a late-arriving earlier gift refills nothing and costs no more.
  refilledAt = math.max(now, rlAt)
  tokens = math.min(burst * 1000, rlTokens + (refilledAt - rlAt) * ratePerS)
end
if tokens < 1000 then return {8} end
if coins < cost then return {6} end
local spentOnDay -- coins the sender already spent on the gift's UTC day
local budgetDays = true -- spent_day or spent_before change (not on the usual same day)
if not spentDay or day > spentDay then
  spentOnDay = 0
  if spentDay and day == spentDay + 1 then spentBefore = spent else spentBefore = 0 end
  spent, spentDay = cost, day
elseif day == spentDay then
  spentOnDay, spent, budgetDays = spent, spent + cost, false
else -- a late gift of an earlier day: counted on the day before `spent_day`
  spentOnDay, spentBefore = spentBefore, spentBefore + cost
end
if limit and spentOnDay + cost > limit then return {7} end

-- 4. The streamer's side: the lifetime coins received decide the diamonds, so no
-- fraction is lost to rounding; they are held until `heldUntil` (0: not held).
local s = redis.call('HMGET', streamerKey, 'received', 'diamonds')
local received, streamerDiamonds = tonumber(s[1] or '0'), tonumber(s[2] or '0')
if not (received and streamerDiamonds) then return {17} end
-- floor(n * shareBps / 10000) without the product, which passes 2^53 (and rounds)
-- once a streamer received ~10^12 coins: n = hi * 10000 + lo, hi * shareBps <= n.
-- Exact whatever lo Lua's % gives (it may be off by 10000 near 2^53).
local function creatorShare(n)
  local lo = n % 10000
  return (n - lo) / 10000 * shareBps + math.floor(lo * shareBps / 10000)
end
local diamonds = creatorShare(received + cost) - creatorShare(received)
local platformShare = cost - diamonds
local held, released = 0, {}
if diamonds > 0 and heldUntil > 0 then
  held = tonumber(redis.call('HGET', heldKey, heldUntilArg) or '0')
  if not held then return {17} end
  if held == 0 then
    -- A new hour's bucket: drop the buckets released by now, at most once an hour.
    for _, field in ipairs(redis.call('HKEYS', heldKey)) do
      local at = tonumber(field)
      if not at then return {17} end
      if at <= now then released[#released + 1] = field end
    end
  end
end
if platformShare > 0 then
  local platform = redis.call('HGET', platformKey, 'coins')
  if platform and not digits(platform) then return {17} end
end

-- 5. Keys written without being read above must hold the type we write.
-- Key, type, key, type, ...: one flat list and a plain loop cost less than pairs.
local expected = {
  streamBoardKey, 'zset', dayBoardKey, 'zset', allBoardKey, 'zset',
  streaksKey, 'zset', journalKey, 'stream', historyKey, 'stream',
}
for i = 1, #expected, 2 do
  local t = redis.call('TYPE', expected[i]).ok
  if t ~= 'none' and t ~= expected[i + 1] then return {15} end
end

-- All checks passed: write. The history comes first: its entry ids must grow, so
-- a stream meta restored behind its history makes that XADD fail; as the first
-- write, it fails with nothing changed. No later call can fail.
local eventId = seq + 1
local coinsTotal = streamCoins + cost
local coinsLeft = coins - cost

local combo = count
if lastCombo then
  if now - lastTap <= comboWindow then
    combo = lastCombo + count
  else
    -- The previous streak's quiet window passed but no sweep has closed it yet.
    local endId = fmt(eventId)
    emitEvent(historyKey, historyMax, channel, endId,
      streakEndEvent(endId, nowArg, lastFragment, fmt(lastCombo), fmt(streamCoins)))
    eventId = eventId + 1
  end
end
local id, total, comboText = fmt(eventId), fmt(coinsTotal), fmt(combo)
emitEvent(historyKey, historyMax, channel, id,
  giftEvent(id, nowArg, eventFragment, countArg, comboText, 'false', total))
if combo == count then
  redis.call('ZADD', streaksKey, now + comboWindow, sender .. ':' .. giftId)
end

redis.call('HSET', streamerKey, 'received', fmt(received + cost),
  'diamonds', fmt(streamerDiamonds + diamonds))
if diamonds > 0 and heldUntil > 0 then
  redis.call('HSET', heldKey, heldUntilArg, fmt(held + diamonds))
  if #released > 0 then redis.call('HDEL', heldKey, unpack(released)) end
end
if platformShare > 0 then redis.call('HINCRBY', platformKey, 'coins', platformShare) end
local coinsLeftText = fmt(coinsLeft)
redis.call('HSET', walletKey, 'coins', coinsLeftText, 'spent', fmt(spent),
  'rl_at', fmt(refilledAt), 'rl_tokens', fmt(tokens - 1000), 'name', senderName)
if budgetDays then
  redis.call('HSET', walletKey, 'spent_day', fmt(spentDay), 'spent_before', fmt(spentBefore))
end

redis.call('ZINCRBY', streamBoardKey, costArg, sender)
if tonumber(redis.call('ZINCRBY', dayBoardKey, costArg, sender)) == cost then
  redis.call('PEXPIRE', dayBoardKey, 9 * 86400000)  -- past the end of its week
end
redis.call('ZINCRBY', allBoardKey, costArg, sender)

local entry = {'type', 'gift', 'user', sender, 'to', meta[1],
  'stream', streamId, 'gift', giftId, 'count', countArg, 'coins', costArg,
  'diamonds', diamonds, 'platform', platformShare, 'share', shareArg, 'event_id', id,
  'key', idemName, 'at', nowArg}
if w[2] then
  entry[#entry + 1] = 'limit'
  entry[#entry + 1] = w[2]
end
if not isAdult then
  entry[#entry + 1] = 'unverified'
  entry[#entry + 1] = '1'
end
redis.call('XADD', journalKey, '*', unpack(entry))

-- The combo outlives its window so that close_streaks can still announce its end.
redis.call('HSET', streamKey, 'seq', id, 'coins', total,
  comboField, comboText .. '|' .. nowArg .. '|' .. eventFragment)
redis.call('SET', idemKey, fingerprint .. '|' .. id .. '|' .. coinsLeftText .. '|' .. comboText,
  'PX', idemTtl)
return {0, eventId, coinsLeft, combo, 0, diamonds}
