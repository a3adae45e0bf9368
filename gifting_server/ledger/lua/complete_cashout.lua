--[[
  complete_cashout: the operator marks a pending cash-out paid or failed. A failed
  one returns its diamonds to the streamer's balance (available at once: they were
  past their holding period when cashed out), journaled as `cashout_failed`. The
  day's cash-out cap is not given back. Completing again with the same status
  answers as the first time and changes nothing; the other status is refused.
  Every check comes before the first write, so no call after it can fail.

  Input:
    KEYS[1] cash-outs  {u:T}:cashouts (cash-out id -> JSON)
    KEYS[2] wallet     {u:T}:wallet
    KEYS[3] journal    {u:T}:journal
    ARGV[1] streamer id  ARGV[2] cash-out id  ARGV[3] status: paid | failed
    ARGV[4] now, unix ms

  Output:
    {0, record JSON (as stored now), replayed(0/1)}
    {15} WRONG_KEY_TYPE  {16} INVALID_ARGUMENT  {17} CORRUPT_VALUE
    {19} UNKNOWN_CASHOUT {20} CASHOUT_CONFLICT (completed with the other status)
]]
--- @include "numbers"
local cashoutsKey, walletKey, journalKey = KEYS[1], KEYS[2], KEYS[3]
local user, cashoutId, status, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not (type(user) == 'string' and type(cashoutId) == 'string' and digits(now)
    and (status == 'paid' or status == 'failed')) then
  return {16}
end
local t = redis.call('TYPE', cashoutsKey).ok
if t == 'none' then return {19} end
if t ~= 'hash' then return {15} end
local raw = redis.call('HGET', cashoutsKey, cashoutId)
if not raw then return {19} end
local ok, record = pcall(cjson.decode, raw)
if not ok or type(record) ~= 'table' or type(record.status) ~= 'string' then return {17} end
if record.status == status then return {0, raw, 1} end
if record.status ~= 'pending' then return {20} end
local diamonds = record.diamonds
if type(diamonds) ~= 'number' or diamonds < 1 or diamonds > MAX
    or diamonds ~= math.floor(diamonds) then
  return {17}
end

local balance
if status == 'failed' then
  balance = stored(redis.call('HGET', walletKey, 'diamonds'), 0)
  if not balance or balance + diamonds > MAX then return {17} end
  local jt = redis.call('TYPE', journalKey).ok
  if jt ~= 'none' and jt ~= 'stream' then return {15} end
end

record.status = status
record.completed_ms = tonumber(now)
local updated = cjson.encode(record)
redis.call('HSET', cashoutsKey, cashoutId, updated)
if status == 'failed' then
  redis.call('HSET', walletKey, 'diamonds', fmt(balance + diamonds))
  redis.call('XADD', journalKey, '*', 'type', 'cashout_failed', 'user', user,
    'cashout', cashoutId, 'diamonds', fmt(diamonds), 'at', now)
end
return {0, updated, 0}
