--[[
  webhook_lease: one worker at a time delivers a stream's messages, which keeps them
  in order. Takes the lease when it is free, renews it for its holder, or (ttl 0)
  gives it up, only for its holder. A holder that dies loses it after its ttl.

  Input:
    KEYS[1] the stream's lease    {s:S}:webhooks:lease
    ARGV[1] the holder's token    ARGV[2] ttl, ms (0: give it up)

  Output:
    {0, held(0/1)}
    {16} INVALID_ARGUMENT
]]
--- @include "numbers"

local leaseKey, token, ttl = KEYS[1], ARGV[1], ARGV[2]
if not (type(token) == 'string' and token ~= '' and digits(ttl)) then return {16} end
local holder = redis.call('GET', leaseKey)
if holder == token then
  if ttl == '0' then
    redis.call('DEL', leaseKey)
    return {0, 0}
  end
  redis.call('PEXPIRE', leaseKey, ttl)
  return {0, 1}
end
if holder or ttl == '0' then return {0, 0} end
redis.call('SET', leaseKey, token, 'PX', ttl)
return {0, 1}
