--[[
  remove_webhook: an endpoint is deleted, with its delivery state and its recent
  attempts. When no endpoint of the stream is left to deliver to, the stream's events
  stop going to its delivery log (the meta's field "webhook_log" is removed) and the
  log is dropped. Removing an endpoint that is not there changes nothing.

  Input:
    KEYS[1] stream meta               {s:S}:meta
    KEYS[2] the stream's endpoints    {s:S}:webhooks
    KEYS[3] endpoints delivered to    {s:S}:webhooks:active
    KEYS[4] the endpoint              {s:S}:webhook:<id>
    KEYS[5] its recent attempts       {s:S}:webhook:<id>:attempts
    KEYS[6] the stream's delivery log {s:S}:webhooks:log
    ARGV[1] webhook id

  Output:
    {0, removed(0/1)}
]]
local metaKey, allKey, activeKey, endpointKey, attemptsKey, logKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local webhookId = ARGV[1]

local removed = redis.call('SREM', allKey, webhookId)
redis.call('SREM', activeKey, webhookId)
redis.call('DEL', endpointKey, attemptsKey)
if redis.call('SCARD', activeKey) == 0 then
  redis.call('HDEL', metaKey, 'webhook_log')
  redis.call('DEL', logKey)
end
return {0, removed}
