--[[
  send_gift: one viewer sends `count` of one gift to a live stream.
  Checks everything first, then writes: debit coins, credit diamonds and the
  platform share, bump three leaderboards, advance the combo, journal, history,
  publish, remember the idempotency key. No write happens before the last check.
  This is the hot path: every redis.call counts (BENCHMARKS.md has the figures).
  The journal entry also records, for the audit's risk report, the sender's own
  daily limit when one is set (`limit`) and `unverified` when the sender has no
  age verification (only possible where the age rule is off).

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
    KEYS[5]  streamer earnings by day  {u:T}:earned
    KEYS[6]  platform account          {ledger}:platform
    KEYS[7]  stream leaderboard        {s:S}:lb
    KEYS[8]  channel leaderboard, day  {u:T}:lb:day:<n>
    KEYS[9]  channel leaderboard, all  {u:T}:lb:all
    KEYS[10] open streaks              {s:S}:streaks
    KEYS[11] journal                   {ledger}:journal
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

  Output:
    {0, event_id, coins_left, combo, replayed(0/1), diamonds}
    When this gift starts a new streak while the sender's previous streak of the
    same gift is still open, that streak's `streak_end` event is emitted first.
    {1}  IDEMPOTENCY_CONFLICT       {2}  UNKNOWN_STREAM
    {3}  STREAM_NOT_LIVE            {4}  SELF_GIFT
    {5}  AGE_VERIFICATION_REQUIRED  {6}  INSUFFICIENT_FUNDS
    {7}  DAILY_LIMIT_EXCEEDED       {8}  RATE_LIMITED
    {15} WRONG_KEY_TYPE (a key we write holds another type; nothing written)
]]
local idemKey, walletKey, streamKey, streamerKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local earnedKey, platformKey, streamBoardKey = KEYS[5], KEYS[6], KEYS[7]
local dayBoardKey, allBoardKey = KEYS[8], KEYS[9]
local streaksKey, journalKey, historyKey = KEYS[10], KEYS[11], KEYS[12]

local sender, senderName, expectedStreamer = ARGV[1], ARGV[2], ARGV[3]
-- Numbers that go back to Redis as they came are passed on as the strings they
-- are: Redis formats a Lua number with %.17g, which costs more than the call.
local giftId, countArg, costArg = ARGV[4], ARGV[5], ARGV[6]
local fingerprint, nowArg = ARGV[7], ARGV[8]
local count, now = tonumber(countArg), tonumber(nowArg)
local isAdult, needAdult = ARGV[9] == '1', ARGV[10] == '1'
local shareBps, comboWindow = tonumber(ARGV[11]), tonumber(ARGV[12])
local ratePerS, burst = tonumber(ARGV[13]), tonumber(ARGV[14])
local idemTtl, historyMax = ARGV[15], ARGV[16]
local eventFragment, channel, idemName, streamId = ARGV[17], ARGV[18], ARGV[19], ARGV[20]

local function fmt(n) return string.format('%.0f', n) end

-- 1. Idempotency: the same key answers the first result again.
local seen = redis.call('GET', idemKey)
if seen then
  local fp, eventId, coinsLeft, combo = string.match(seen, '^(.*)|(%d+)|(%d+)|(%d+)$')
  if fp ~= fingerprint then return {1} end
  return {0, tonumber(eventId), tonumber(coinsLeft), tonumber(combo), 1, 0}
end

-- 2. The stream, and the sender's combo of this gift on it.
local comboField = 'c:' .. sender .. ':' .. giftId
local meta = redis.call('HMGET', streamKey, 'streamer', 'status', 'seq', 'coins', comboField)
if not meta[1] or meta[1] ~= expectedStreamer then return {2} end
if meta[2] ~= 'live' then return {3} end
if meta[1] == sender then return {4} end
if needAdult and not isAdult then return {5} end

-- 3. The sender's wallet: rate limit, balance, own daily budget.
local w = redis.call('HMGET', walletKey, 'coins', 'limit', 'spent', 'spent_day', 'rl_at', 'rl_tokens')
local day = math.floor(now / 86400000)
local cost = tonumber(costArg)
local tokens, refilledAt = burst * 1000, now
if w[5] then
  -- Concurrent gifts may reach Redis out of clock order: time never runs backwards
  -- for the bucket, so a late-arriving earlier gift refills nothing and costs no more.
  refilledAt = math.max(now, tonumber(w[5]))
  tokens = math.min(burst * 1000, tonumber(w[6]) + (refilledAt - tonumber(w[5])) * ratePerS)
end
if tokens < 1000 then return {8} end
local coins = tonumber(w[1] or '0')
if coins < cost then return {6} end
local spent = 0
if w[4] and tonumber(w[4]) == day then spent = tonumber(w[3]) end
if w[2] and spent + cost > tonumber(w[2]) then return {7} end

-- 4. Keys written without being read above must hold the type we write. The
-- streamer wallet needs no check: it is the first key written, so a wrong type
-- there fails the script before anything changed.
local expected = {
  {earnedKey, 'hash'}, {platformKey, 'hash'}, {streamBoardKey, 'zset'},
  {dayBoardKey, 'zset'}, {allBoardKey, 'zset'},
  {streaksKey, 'zset'}, {journalKey, 'stream'}, {historyKey, 'stream'},
}
for _, pair in ipairs(expected) do
  local t = redis.call('TYPE', pair[1]).ok
  if t ~= 'none' and t ~= pair[2] then return {15} end
end

-- All checks passed: write.
local received = redis.call('HINCRBY', streamerKey, 'received', costArg)
-- floor(n * shareBps / 10000) without the product, which passes 2^53 (and rounds)
-- once a streamer received ~10^12 coins: n = hi * 10000 + lo, hi * shareBps <= n.
-- Exact whatever lo Lua's % gives (it may be off by 10000 near 2^53).
local function creatorShare(n)
  local lo = n % 10000
  return (n - lo) / 10000 * shareBps + math.floor(lo * shareBps / 10000)
end
local diamonds = creatorShare(received) - creatorShare(received - cost)
local platformShare = cost - diamonds
local eventId = tonumber(meta[3] or '0') + 1
local coinsTotal = tonumber(meta[4] or '0') + cost
local coinsLeft = coins - cost

local function emit(id, json)
  redis.call('XADD', historyKey, 'MAXLEN', '~', historyMax, id .. '-0', 'e', json)
  redis.call('PUBLISH', channel, json)
end

local combo = count
if meta[5] then
  local n, at, fragment = string.match(meta[5], '^(%d+)|(%d+)|(.*)$')
  if now - tonumber(at) <= comboWindow then
    combo = tonumber(n) + count
  else
    -- The previous streak's quiet window passed but no sweep has closed it yet.
    emit(fmt(eventId), '{"event_id":' .. fmt(eventId) .. ',"kind":"gift","ts":' .. nowArg
      .. ',' .. fragment .. '"count":0,"combo":' .. n .. ',"streak_end":true,"coins_total":'
      .. (meta[4] or '0') .. '}')
    eventId = eventId + 1
  end
end
if combo == count then
  redis.call('ZADD', streaksKey, now + comboWindow, sender .. ':' .. giftId)
end

if diamonds > 0 then
  redis.call('HINCRBY', streamerKey, 'diamonds', diamonds)
  redis.call('HINCRBY', earnedKey, day, diamonds)
end
if platformShare > 0 then redis.call('HINCRBY', platformKey, 'coins', platformShare) end
local coinsLeftText = fmt(coinsLeft)
redis.call('HSET', walletKey, 'coins', coinsLeftText, 'spent', fmt(spent + cost),
  'spent_day', day, 'rl_at', fmt(refilledAt), 'rl_tokens', fmt(tokens - 1000),
  'name', senderName)

redis.call('ZINCRBY', streamBoardKey, costArg, sender)
if tonumber(redis.call('ZINCRBY', dayBoardKey, costArg, sender)) == cost then
  redis.call('PEXPIRE', dayBoardKey, 9 * 86400000)  -- past the end of its week
end
redis.call('ZINCRBY', allBoardKey, costArg, sender)

local id = fmt(eventId)
local entry = {'type', 'gift', 'user', sender, 'to', meta[1],
  'stream', streamId, 'gift', giftId, 'count', countArg, 'coins', costArg,
  'diamonds', diamonds, 'platform', platformShare, 'event_id', id,
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

local total, comboText = fmt(coinsTotal), fmt(combo)
emit(id, '{"event_id":' .. id .. ',"kind":"gift","ts":' .. nowArg .. ','
  .. eventFragment .. '"count":' .. countArg .. ',"combo":' .. comboText
  .. ',"streak_end":false,"coins_total":' .. total .. '}')

-- The combo outlives its window so that close_streaks can still announce its end.
redis.call('HSET', streamKey, 'seq', id, 'coins', total,
  comboField, comboText .. '|' .. nowArg .. '|' .. eventFragment)
redis.call('SET', idemKey, fingerprint .. '|' .. id .. '|' .. coinsLeftText .. '|' .. comboText,
  'PX', idemTtl)
return {0, eventId, coinsLeft, combo, 0, diamonds}
