--[[
  add_streamer_webhook: a streamer registers an endpoint for all their streams: kept
  with the streamer (url, kinds, its one secret); each stream it follows gets its own
  record through add_webhook (webhooks/following.py). Registering an id that exists
  with the same url and kinds answers it again (a retried registration, also one in
  flight at the same time); with others, IDEMPOTENCY_CONFLICT.

  Input:
    KEYS[1] the endpoint    {u:T}:webhook:<id>   (hash)
    ARGV[1] url    ARGV[2] kinds, comma-separated    ARGV[3] secret
    ARGV[4] now, unix ms

  Output:
    {0, secret, replayed(0/1)}
    {1}  IDEMPOTENCY_CONFLICT    {16} INVALID_ARGUMENT
]]
--- @include "numbers"

local endpointKey, url, kinds, secret, now = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not (type(url) == 'string' and url ~= '' and type(kinds) == 'string' and kinds ~= ''
    and type(secret) == 'string' and secret ~= '' and digits(now)) then
  return {16}
end
local known = redis.call('HMGET', endpointKey, 'url', 'kinds', 'secret')
if known[1] then
  if known[1] ~= url or known[2] ~= kinds then return {1} end
  return {0, known[3], 1}
end
redis.call('HSET', endpointKey, 'url', url, 'kinds', kinds, 'secret', secret, 'created_at', now)
return {0, secret, 0}
