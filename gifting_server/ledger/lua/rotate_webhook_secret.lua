--[[
  rotate_webhook_secret: an endpoint gets a new signing secret; every delivery from
  the next on is signed with it. An endpoint that is gone is not brought back.

  Input:
    KEYS[1] the endpoint    {s:S}:webhook:<id>
    ARGV[1] the new secret

  Output:
    {0}
    {25} UNKNOWN_WEBHOOK    {16} INVALID_ARGUMENT
]]
local endpointKey, secret = KEYS[1], ARGV[1]
if type(secret) ~= 'string' or secret == '' then return {16} end
if redis.call('EXISTS', endpointKey) == 0 then return {25} end
redis.call('HSET', endpointKey, 'secret', secret)
return {0}
