--[[
  close_streaks: announce the end of every streak of a stream whose quiet window
  has passed: one `gift` event with `streak_end: true` per streak. Atomic, so
  when several workers sweep the same stream each streak still ends exactly once.
  A streak that went on past its first deadline gets its deadline pushed instead
  (send_gift only sets the deadline when a streak starts).
  Everything is decided before the first write, and the events come first (each
  appended to the history, then published): their ids must be above the history's
  last (a meta restored behind its history breaks that), and the first append
  failing changes nothing. No later call can fail.

  Input:
    KEYS[1] open streaks    {s:S}:streaks  (member "<sender>:<gift>", score = deadline ms)
    KEYS[2] stream meta     {s:S}:meta     (field "c:<member>" = "<combo>|<last tap ms>|<fragment>")
    KEYS[3] stream history  {s:S}:history
    ARGV[1] now, unix ms    ARGV[2] combo quiet window, ms
    ARGV[3] history length cap  ARGV[4] pub/sub channel
    ARGV[5] most streaks to close in one call

  Output:
    {0, streaks_closed}
    {15} WRONG_KEY_TYPE     {16} INVALID_ARGUMENT  {17} CORRUPT_VALUE (seq)
]]
--- @include "numbers"
--- @include "event"

local streaksKey, streamKey, historyKey = KEYS[1], KEYS[2], KEYS[3]
local nowArg, windowArg, historyMax, channel, batch = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

if not (digits(nowArg) and digits(windowArg) and digits(historyMax) and digits(batch)
    and type(channel) == 'string') then
  return {16}
end
local now, window = tonumber(nowArg), tonumber(windowArg)

local due = redis.call('ZRANGEBYSCORE', streaksKey, '-inf', now, 'LIMIT', 0, batch)
if #due == 0 then return {0, 0} end
local t = redis.call('TYPE', historyKey).ok
if t ~= 'none' and t ~= 'stream' then return {15} end
local fields = {'seq', 'coins', 'webhook_log'}
for i, member in ipairs(due) do fields[i + 3] = 'c:' .. member end
local meta = redis.call('HMGET', streamKey, unpack(fields))
if (meta[1] and not digits(meta[1])) or (meta[2] and not digits(meta[2])) then return {17} end
local eventId, coinsTotal = tonumber(meta[1] or '0'), meta[2] or '0'

-- Decide first: which streaks go on (a later deadline), which end (an event).
local pushed, events, ended, gone = {}, {}, {}, {}
for i, member in ipairs(due) do
  local combo = meta[i + 3]
  local n, at, fragment
  if combo then n, at, fragment = string.match(combo, '^(%d+)|(%d+)|(.*)$') end
  if at and #at <= 15 and now - tonumber(at) <= window then
    pushed[#pushed + 1] = tonumber(at) + window
    pushed[#pushed + 1] = member
  else
    if n then
      eventId = eventId + 1
      local id = fmt(eventId)
      events[#events + 1] = {id, streakEndEvent(id, nowArg, fragment, n, coinsTotal)}
      ended[#ended + 1] = 'c:' .. member
    end
    gone[#gone + 1] = member
  end
end

for _, ending in ipairs(events) do
  emitEvent(historyKey, historyMax, channel, ending[1], ending[2], meta[3])
end
if #pushed > 0 then redis.call('ZADD', streaksKey, unpack(pushed)) end
if #gone > 0 then redis.call('ZREM', streaksKey, unpack(gone)) end
if #events > 0 then
  redis.call('HSET', streamKey, 'seq', fmt(eventId))
  redis.call('HDEL', streamKey, unpack(ended))
end
return {0, #events}
