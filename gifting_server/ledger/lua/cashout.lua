--[[
  cashout: a streamer turns diamonds into money. Only diamonds older than the
  holding period count; the day's cash-outs stay under the daily cap.
  Idempotent by the request's key. The cash-out is recorded as pending for payout.

  Input:
    KEYS[1] idempotency record  {u:T}:idem:<key>
    KEYS[2] wallet              {u:T}:wallet
    KEYS[3] earnings by day     {u:T}:earned   (day number -> diamonds earned)
    KEYS[4] cash-outs           {u:T}:cashouts (cash-out id -> JSON)
    KEYS[5] journal             {ledger}:journal
    ARGV[1] streamer id         ARGV[2] diamonds      ARGV[3] cents for them
    ARGV[4] request fingerprint ARGV[5] now, unix ms  ARGV[6] minimum diamonds
    ARGV[7] daily cap, cents    ARGV[8] holding period, days
    ARGV[9] idempotency ttl, ms ARGV[10] new cash-out id  ARGV[11] currency
    ARGV[12] idempotency key

  Output:
    {0, cashout_id, diamonds, cents, diamonds_left, replayed(0/1), created_ms}
    {1}  IDEMPOTENCY_CONFLICT   {10} INSUFFICIENT_DIAMONDS
    {11} CASHOUT_BELOW_MINIMUM  {12} CASHOUT_DAILY_CAP
    {15} WRONG_KEY_TYPE
]]
local idemKey, walletKey, earnedKey, cashoutsKey, journalKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local user, diamonds, cents = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local fingerprint, now, minimum = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local dailyCap, holdDays, idemTtl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local cashoutId, currency, idemName = ARGV[10], ARGV[11], ARGV[12]

local function fmt(n) return string.format('%.0f', n) end

local seen = redis.call('GET', idemKey)
if seen then
  local fp, id, d, c, left, at = string.match(seen, '^(.*)|([^|]+)|(%d+)|(%d+)|(%d+)|(%d+)$')
  if fp ~= fingerprint then return {1} end
  return {0, id, tonumber(d), tonumber(c), tonumber(left), 1, tonumber(at)}
end

if diamonds < minimum then return {11} end
local w = redis.call('HMGET', walletKey, 'diamonds', 'cashout_day', 'cashout_cents')
local today = math.floor(now / 86400000)
local held, expired = 0, {}
local earned = redis.call('HGETALL', earnedKey)
for i = 1, #earned, 2 do
  local day = tonumber(earned[i])
  if day > today - holdDays then held = held + tonumber(earned[i + 1])
  else expired[#expired + 1] = earned[i] end
end
local balance = tonumber(w[1] or '0')
if balance - held < diamonds then return {10} end
local cashedToday = 0
if w[2] and tonumber(w[2]) == today then cashedToday = tonumber(w[3]) end
if cashedToday + cents > dailyCap then return {12} end
for _, pair in ipairs({{cashoutsKey, 'hash'}, {journalKey, 'stream'}}) do
  local t = redis.call('TYPE', pair[1]).ok
  if t ~= 'none' and t ~= pair[2] then return {15} end
end

local left = balance - diamonds
redis.call('HSET', walletKey, 'diamonds', fmt(left), 'cashout_day', fmt(today),
  'cashout_cents', fmt(cashedToday + cents))
if #expired > 0 then redis.call('HDEL', earnedKey, unpack(expired)) end
redis.call('HSET', cashoutsKey, cashoutId, cjson.encode({
  cashout_id = cashoutId, diamonds = diamonds, cents = cents, currency = currency,
  status = 'pending', created_ms = now}))
redis.call('XADD', journalKey, '*', 'type', 'cashout', 'user', user, 'cashout', cashoutId,
  'diamonds', fmt(diamonds), 'cents', fmt(cents), 'key', idemName, 'at', fmt(now))
redis.call('SET', idemKey, fingerprint .. '|' .. cashoutId .. '|' .. fmt(diamonds) .. '|'
  .. fmt(cents) .. '|' .. fmt(left) .. '|' .. fmt(now), 'PX', idemTtl)
return {0, cashoutId, diamonds, cents, left, 0, now}
