--[[
  publish_state: publish a stream's state event (viewer count, top gifters) only
  when it differs from the last one published, by any worker. Atomic, so
  workers racing with the same new state publish it once.
  The history's XADD is the first write: its id must be above the history's last
  (a meta restored behind its history breaks that), and failing first it changes
  nothing. No call after it can fail.

  Input:
    KEYS[1] stream meta     {s:S}:meta
    KEYS[2] stream history  {s:S}:history
    ARGV[1] meta field that remembers the last published state (e.g. "last_viewers")
    ARGV[2] the state, as the JSON fragment of the event body: "count":12
    ARGV[3] event kind      ARGV[4] now, unix ms
    ARGV[5] history length cap  ARGV[6] pub/sub channel

  Output:
    {0, event_id, or 0 when unchanged or the stream is not live}
    {15} WRONG_KEY_TYPE     {16} INVALID_ARGUMENT  {17} CORRUPT_VALUE (seq)
]]
--- @include "numbers"
--- @include "event"

local streamKey, historyKey = KEYS[1], KEYS[2]
local field, state, kind, now, historyMax, channel =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if not (type(field) == 'string' and type(state) == 'string' and type(kind) == 'string'
    and digits(now) and digits(historyMax) and type(channel) == 'string') then
  return {16}
end
local meta = redis.call('HMGET', streamKey, 'status', 'seq', field, 'webhook_log')
if meta[1] ~= 'live' or meta[3] == state then return {0, 0} end
if meta[2] and not digits(meta[2]) then return {17} end
local t = redis.call('TYPE', historyKey).ok
if t ~= 'none' and t ~= 'stream' then return {15} end
local id = string.format('%.0f', tonumber(meta[2] or '0') + 1)
emitEvent(historyKey, historyMax, channel, id, event(id, kind, now, state), meta[4])
redis.call('HSET', streamKey, 'seq', id, field, state)
return {0, tonumber(id)}
