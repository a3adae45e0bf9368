--[[
  add_webhook: a streamer registers an endpoint for one of their streams. From this
  call on, every event of the stream is appended to its delivery log as well
  (emitEvent, while the meta's field "webhook_log" names it), in the same step that
  appends it to the history: the endpoint gets every event after its registration.
  The endpoint's cursor starts at the stream's last event id. Registering an id that
  exists with the same url and kinds answers it again (a retried registration); with
  others, IDEMPOTENCY_CONFLICT. Checks first, then writes. An endpoint for all the
  streamer's streams (scope "all") is added to each of them with this script; its
  secret is kept once, with the streamer (keys.streamer_webhook), and is "" here.

  Input:
    KEYS[1] stream meta               {s:S}:meta
    KEYS[2] the stream's endpoints    {s:S}:webhooks         (set of ids)
    KEYS[3] endpoints delivered to    {s:S}:webhooks:active  (set of ids)
    KEYS[4] the endpoint              {s:S}:webhook:<id>     (hash)
    KEYS[5] the stream's delivery log {s:S}:webhooks:log     (stream)
    ARGV[1] streamer id    ARGV[2] webhook id    ARGV[3] url
    ARGV[4] kinds, comma-separated    ARGV[5] secret    ARGV[6] now, unix ms
    ARGV[7] scope: "" (this stream) or "all" (all the streamer's streams)

  Output:
    {0, secret, replayed(0/1)}
    {1}  IDEMPOTENCY_CONFLICT  the id exists with another url or kinds
    {2}  UNKNOWN_STREAM        {13} NOT_STREAM_OWNER
    {15} WRONG_KEY_TYPE        the delivery log is not a stream
    {16} INVALID_ARGUMENT      {17} CORRUPT_VALUE  the meta's seq is not an integer
]]
--- @include "numbers"

local metaKey, allKey, activeKey, endpointKey, logKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local streamer, webhookId, url, kinds, secret, now, scope =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if not (type(webhookId) == 'string' and webhookId ~= '' and type(url) == 'string' and url ~= ''
    and type(kinds) == 'string' and kinds ~= '' and type(secret) == 'string'
    and (scope == '' or scope == 'all') and (secret ~= '' or scope == 'all')
    and digits(now)) then
  return {16}
end

local meta = redis.call('HMGET', metaKey, 'streamer', 'seq')
if not meta[1] then return {2} end
if meta[1] ~= streamer then return {13} end
if meta[2] and not digits(meta[2]) then return {17} end
local t = redis.call('TYPE', logKey).ok
if t ~= 'none' and t ~= 'stream' then return {15} end

local known = redis.call('HMGET', endpointKey, 'url', 'kinds', 'secret')
if known[1] then
  if known[1] ~= url or known[2] ~= kinds then return {1} end
  return {0, known[3], 1}
end

redis.call('HSET', endpointKey, 'url', url, 'kinds', kinds, 'secret', secret,
  'streamer', streamer, 'created_at', now, 'status', 'active', 'cursor', meta[2] or '0',
  'failures', '0', 'next_at', '0', 'scope', scope)
redis.call('SADD', allKey, webhookId)
redis.call('SADD', activeKey, webhookId)
redis.call('HSET', metaKey, 'webhook_log', logKey)
return {0, secret, 0}
