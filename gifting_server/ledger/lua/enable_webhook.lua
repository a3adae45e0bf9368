--[[
  enable_webhook: a streamer enables again an endpoint the deliverer disabled (or
  one stream's record of an endpoint for all their streams). It keeps its id and
  secret; its failures, next attempt's time and disabled reason are cleared, and its
  cursor starts at the stream's last event id, as a new registration's does: the
  events from before the enable are not delivered (they were older than max_age and
  would disable it again). From this call on the stream's events are appended to its
  delivery log again (the meta's field "webhook_log"), in the same step that appends
  them to the history. An endpoint already active changes nothing. Checks first, then
  writes.

  Input:
    KEYS[1] stream meta               {s:S}:meta
    KEYS[2] the stream's endpoints    {s:S}:webhooks         (set of ids)
    KEYS[3] endpoints delivered to    {s:S}:webhooks:active  (set of ids)
    KEYS[4] the endpoint              {s:S}:webhook:<id>     (hash)
    KEYS[5] the stream's delivery log {s:S}:webhooks:log     (stream)
    ARGV[1] webhook id

  Output:
    {0, enabled now(0/1)}
    {25} UNKNOWN_WEBHOOK       the endpoint is not (or no longer) one of the stream's
    {2}  UNKNOWN_STREAM        {15} WRONG_KEY_TYPE  the delivery log is not a stream
    {16} INVALID_ARGUMENT      {17} CORRUPT_VALUE   the meta's seq is not an integer
]]
--- @include "numbers"

local metaKey, allKey, activeKey, endpointKey, logKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local webhookId = ARGV[1]
if not (type(webhookId) == 'string' and webhookId ~= '') then return {16} end

if redis.call('EXISTS', endpointKey) == 0 then return {25} end
if redis.call('SISMEMBER', allKey, webhookId) == 0 then return {25} end
local meta = redis.call('HMGET', metaKey, 'streamer', 'seq')
if not meta[1] then return {2} end
if meta[2] and not digits(meta[2]) then return {17} end
local t = redis.call('TYPE', logKey).ok
if t ~= 'none' and t ~= 'stream' then return {15} end

local status = redis.call('HGET', endpointKey, 'status')
if status == 'active' and redis.call('SISMEMBER', activeKey, webhookId) == 1 then
  return {0, 0}
end

redis.call('HSET', endpointKey, 'status', 'active', 'cursor', meta[2] or '0',
  'failures', '0', 'next_at', '0')
redis.call('HDEL', endpointKey, 'reason', 'disabled_at')
redis.call('SADD', activeKey, webhookId)
redis.call('HSET', metaKey, 'webhook_log', logKey)
return {0, 1}
