--[[
  index_webhook: a streamer's new endpoint takes its place in their index, if there
  is room (`[webhooks] max_per_streamer`). The count and the insert are one step:
  registrations arriving together cannot each see room for one more. An id already
  indexed (a retried registration) is answered as it is, room or not.

  Input:
    KEYS[1] the streamer's endpoints  {u:T}:webhooks  (hash: webhook id → stream or "*")
    ARGV[1] webhook id    ARGV[2] its stream id, or "*"    ARGV[3] at most this many

  Output:
    {0, 1}  indexed now
    {0, 0}  indexed already
    {0, 2}  refused: the streamer has ARGV[3] endpoints already (nothing written)
    {16}    INVALID_ARGUMENT
]]
--- @include "numbers"

local indexKey, webhookId, scope, limit = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if not (type(webhookId) == 'string' and webhookId ~= '' and type(scope) == 'string'
    and scope ~= '' and digits(limit)) then
  return {16}
end
if redis.call('HEXISTS', indexKey, webhookId) == 1 then return {0, 0} end
if redis.call('HLEN', indexKey) >= tonumber(limit) then return {0, 2} end
redis.call('HSET', indexKey, webhookId, scope)
return {0, 1}
