--[[
  publish_battle: a `battle` event on one of the battle's streams, when its state
  differs from the last one published there by any worker (the meta field
  `battle_pub`, which a subscriber is also shown: hub/stream_state.py). A final
  state (ended, declined, cancelled) is published once per stream and battle
  (`battle_done`): nothing of that battle is published there after it. Published
  whether the stream is live or not (a stream that ended during its battle still
  gets the result in its history).
  The history's XADD is the first write (see emitEvent); no call after it can fail.

  Input:
    KEYS[1] stream meta     {s:S}:meta  (field webhook_log: see emitEvent)
    KEYS[2] stream history  {s:S}:history
    ARGV[1] battle id       ARGV[2] the state: the event body's JSON members
    ARGV[3] final (1/0)     ARGV[4] now, unix ms
    ARGV[5] history length cap   ARGV[6] pub/sub channel

  Output:
    {0, event_id, or 0 when unchanged or the battle's end was published already}
    {2}  UNKNOWN_STREAM    {15} WRONG_KEY_TYPE
    {16} INVALID_ARGUMENT  {17} CORRUPT_VALUE (seq)
]]
--- @include "numbers"
--- @include "event"

local metaKey, historyKey = KEYS[1], KEYS[2]
local battleId, state, final, now, historyMax, channel =
  ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4], ARGV[5], ARGV[6]
if not (type(battleId) == 'string' and type(state) == 'string' and digits(now)
    and digits(historyMax) and type(channel) == 'string') then
  return {16}
end
local meta = redis.call('HMGET', metaKey, 'streamer', 'seq', 'battle_pub', 'battle_done',
  'webhook_log')
if not meta[1] then return {2} end
if meta[4] == battleId or meta[3] == state then return {0, 0} end
if meta[2] and not digits(meta[2]) then return {17} end
local t = redis.call('TYPE', historyKey).ok
if t ~= 'none' and t ~= 'stream' then return {15} end
local id = fmt(tonumber(meta[2] or '0') + 1)
emitEvent(historyKey, historyMax, channel, id, event(id, 'battle', now, state), meta[5])
if final then
  redis.call('HSET', metaKey, 'seq', id, 'battle_pub', state, 'battle_done', battleId)
else
  redis.call('HSET', metaKey, 'seq', id, 'battle_pub', state)
end
return {0, tonumber(id)}
