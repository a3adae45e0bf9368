--[[
  cashout: a streamer turns diamonds into money. Only diamonds past their holding
  period count; the day's cash-outs stay under the daily cap. Idempotent by the
  request's key. The cash-out is recorded as pending for payout.
  Every argument and stored number is validated before the first write, so no call
  after it can fail.

  Held diamonds: send_gift keeps them in KEYS[6], one bucket per release time (a
  whole hour, never sooner than the holding period after they were earned).
  KEYS[3] holds diamonds earned before that, by UTC day: held until the end of
  their day plus the holding period (a period of 0 holds nothing). Released
  buckets are dropped here.
  The daily cap counts the cents cashed out on `cashout_day` and on the day before
  (`cashout_cents_before`): a request stamped with the earlier day that reaches
  Redis late counts on its own day and never resets the newer one.

  Input:
    KEYS[1] idempotency record  {u:T}:idem:<key>
    KEYS[2] wallet              {u:T}:wallet
    KEYS[3] earnings by day     {u:T}:earned   (day number -> diamonds; before hourly holds)
    KEYS[4] cash-outs           {u:T}:cashouts (cash-out id -> JSON)
    KEYS[5] journal             {u:T}:journal
    KEYS[6] held diamonds       {u:T}:held     (release unix ms -> diamonds)
    ARGV[1] streamer id         ARGV[2] diamonds      ARGV[3] cents for them
    ARGV[4] request fingerprint ARGV[5] now, unix ms  ARGV[6] minimum diamonds
    ARGV[7] daily cap, cents    ARGV[8] holding period, ms
    ARGV[9] idempotency ttl, ms ARGV[10] new cash-out id  ARGV[11] currency
    ARGV[12] idempotency key

  Output:
    {0, cashout_id, diamonds, cents, diamonds_left, replayed(0/1), created_ms}
    {1}  IDEMPOTENCY_CONFLICT   {10} INSUFFICIENT_DIAMONDS
    {11} CASHOUT_BELOW_MINIMUM  {12} CASHOUT_DAILY_CAP
    {15} WRONG_KEY_TYPE         {16} INVALID_ARGUMENT  {17} CORRUPT_VALUE
]]
--- @include "numbers"
local idemKey, walletKey, earnedKey, cashoutsKey, journalKey, heldKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local user, fingerprint, idemTtl = ARGV[1], ARGV[4], ARGV[9]
local cashoutId, currency, idemName = ARGV[10], ARGV[11], ARGV[12]

local diamonds, cents = int(ARGV[2], -MAX, MAX), int(ARGV[3], -MAX, MAX)
local now, minimum = int(ARGV[5], 0, MAX), int(ARGV[6], 0, MAX)
local dailyCap, holdMs = int(ARGV[7], 0, MAX), int(ARGV[8], 0, MAX)
if not (diamonds and cents and now and minimum and dailyCap and holdMs
    and int(idemTtl, 1, MAX)) then
  return {16}
end

local seen = redis.call('GET', idemKey)
if seen then
  local fp, id, d, c, left, at = string.match(seen, '^(.*)|([^|]+)|(%d+)|(%d+)|(%d+)|(%d+)$')
  if fp ~= fingerprint then return {1} end
  return {0, id, tonumber(d), tonumber(c), tonumber(left), 1, tonumber(at)}
end

if diamonds < minimum then return {11} end
local w = redis.call('HMGET', walletKey, 'diamonds', 'cashout_day', 'cashout_cents',
  'cashout_cents_before')
local balance, cashoutDay = stored(w[1], 0), stored(w[2], false)
local cashed, cashedBefore = stored(w[3], 0), stored(w[4], 0)
if not (balance and cashoutDay ~= nil and cashed and cashedBefore) then return {17} end

local held, releasedDays, releasedHours = 0, {}, {}
local earned = redis.call('HGETALL', earnedKey)
for i = 1, #earned, 2 do
  local day, amount = int(earned[i], 0, MAX), stored(earned[i + 1], 0)
  if not (day and amount) then return {17} end
  if holdMs > 0 and (day + 1) * 86400000 + holdMs > now then held = held + amount
  else releasedDays[#releasedDays + 1] = earned[i] end
end
local buckets = redis.call('HGETALL', heldKey)
for i = 1, #buckets, 2 do
  local at, amount = int(buckets[i], 0, MAX), stored(buckets[i + 1], 0)
  if not (at and amount) then return {17} end
  if at > now then held = held + amount
  else releasedHours[#releasedHours + 1] = buckets[i] end
end
if balance - held < diamonds then return {10} end

local today = math.floor(now / 86400000)
local cashedOnDay -- cents already cashed out on the request's UTC day
if not cashoutDay or today > cashoutDay then
  cashedOnDay = 0
  if cashoutDay and today == cashoutDay + 1 then cashedBefore = cashed else cashedBefore = 0 end
  cashed, cashoutDay = cents, today
elseif today == cashoutDay then
  cashedOnDay, cashed = cashed, cashed + cents
else -- a late request of an earlier day: counted on the day before `cashout_day`
  cashedOnDay, cashedBefore = cashedBefore, cashedBefore + cents
end
if cashedOnDay + cents > dailyCap then return {12} end
for _, pair in ipairs({{cashoutsKey, 'hash'}, {journalKey, 'stream'}}) do
  local t = redis.call('TYPE', pair[1]).ok
  if t ~= 'none' and t ~= pair[2] then return {15} end
end

local left = balance - diamonds
redis.call('HSET', walletKey, 'diamonds', fmt(left), 'cashout_day', fmt(cashoutDay),
  'cashout_cents', fmt(cashed), 'cashout_cents_before', fmt(cashedBefore))
if #releasedDays > 0 then redis.call('HDEL', earnedKey, unpack(releasedDays)) end
if #releasedHours > 0 then redis.call('HDEL', heldKey, unpack(releasedHours)) end
redis.call('HSET', cashoutsKey, cashoutId, cjson.encode({
  cashout_id = cashoutId, diamonds = diamonds, cents = cents, currency = currency,
  status = 'pending', created_ms = now}))
redis.call('XADD', journalKey, '*', 'type', 'cashout', 'user', user, 'cashout', cashoutId,
  'diamonds', fmt(diamonds), 'cents', fmt(cents), 'key', idemName, 'at', fmt(now))
redis.call('SET', idemKey, fingerprint .. '|' .. cashoutId .. '|' .. fmt(diamonds) .. '|'
  .. fmt(cents) .. '|' .. fmt(left) .. '|' .. fmt(now), 'PX', idemTtl)
return {0, cashoutId, diamonds, cents, left, 0, now}
