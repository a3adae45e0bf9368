--[[
  set_daily_limit: a user sets (or clears) their own daily coin budget.
  send_gift enforces it atomically against the coins spent that UTC day.

  Input:
    KEYS[1] wallet  {u:U}:wallet
    ARGV[1] the limit in coins, or "" to remove it

  Output:
    {0, limit or -1 when removed}
]]
local walletKey, limit = KEYS[1], ARGV[1]
redis.call('HGET', walletKey, 'coins') -- a wallet of the wrong type fails here, before the write
if limit == '' then
  redis.call('HDEL', walletKey, 'limit')
  return {0, -1}
end
redis.call('HSET', walletKey, 'limit', limit)
return {0, tonumber(limit)}
