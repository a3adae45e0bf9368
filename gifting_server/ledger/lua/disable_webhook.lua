--[[
  disable_webhook: the deliverer stops delivering to an endpoint (its oldest
  undelivered message is older than `[webhooks] max_age_s`), keeping it, with the
  reason, for its streamer to see. When no endpoint of the stream is left to deliver
  to, the log stops being fed and is dropped (as remove_webhook does). An endpoint
  already disabled or gone changes nothing.

  Input:
    KEYS[1] stream meta               {s:S}:meta
    KEYS[2] endpoints delivered to    {s:S}:webhooks:active
    KEYS[3] the endpoint              {s:S}:webhook:<id>
    KEYS[4] the stream's delivery log {s:S}:webhooks:log
    ARGV[1] webhook id    ARGV[2] reason (for people)    ARGV[3] now, unix ms

  Output:
    {0, disabled now(0/1)}
]]
local metaKey, activeKey, endpointKey, logKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local webhookId, reason, now = ARGV[1], ARGV[2], ARGV[3]

if redis.call('SISMEMBER', activeKey, webhookId) == 0 then return {0, 0} end
redis.call('SREM', activeKey, webhookId)
if redis.call('EXISTS', endpointKey) == 1 then
  redis.call('HSET', endpointKey, 'status', 'disabled', 'reason', reason, 'disabled_at', now)
end
if redis.call('SCARD', activeKey) == 0 then
  redis.call('HDEL', metaKey, 'webhook_log')
  redis.call('DEL', logKey)
end
return {0, 1}
