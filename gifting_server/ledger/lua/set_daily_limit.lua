--[[
  set_daily_limit: a user sets (or clears) their own daily coin budget.
  send_gift enforces it atomically against the coins spent that UTC day.

  Input:
    KEYS[1] wallet  {u:U}:wallet
    ARGV[1] the limit in coins (an integer >= 0), or "" to remove it

  Output:
    {0, limit or -1 when removed}
    {16} INVALID_ARGUMENT  the limit is neither "" nor an integer >= 0; nothing written
]]
local walletKey, limit = KEYS[1], ARGV[1]
-- The limit is stored as given, and send_gift must be able to read it back.
if limit ~= '' and not (type(limit) == 'string' and string.find(limit, '^%d+$')
    and tonumber(limit) <= 9007199254740991) then
  return {16}
end
redis.call('HGET', walletKey, 'coins') -- a wallet of the wrong type fails here, before the write
if limit == '' then
  redis.call('HDEL', walletKey, 'limit')
  return {0, -1}
end
redis.call('HSET', walletKey, 'limit', limit)
return {0, tonumber(limit)}
