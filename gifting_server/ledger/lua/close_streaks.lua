--[[
  close_streaks: announce the end of every streak of a stream whose quiet window
  has passed: one `gift` event with `streak_end: true` per streak. Atomic, so
  when several workers sweep the same stream each streak still ends exactly once.
  A streak that went on past its first deadline gets its deadline pushed instead
  (send_gift only sets the deadline when a streak starts).

  Input:
    KEYS[1] open streaks    {s:S}:streaks  (member "<sender>:<gift>", score = deadline ms)
    KEYS[2] stream meta     {s:S}:meta     (field "c:<member>" = "<combo>|<last tap ms>|<fragment>")
    KEYS[3] stream history  {s:S}:history
    ARGV[1] now, unix ms    ARGV[2] combo quiet window, ms
    ARGV[3] history length cap  ARGV[4] pub/sub channel
    ARGV[5] most streaks to close in one call

  Output:
    {0, streaks_closed}
    {15} WRONG_KEY_TYPE
]]
local streaksKey, streamKey, historyKey = KEYS[1], KEYS[2], KEYS[3]
local now, window, historyMax = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local channel, batch = ARGV[4], ARGV[5]

local function fmt(n) return string.format('%.0f', n) end

local due = redis.call('ZRANGEBYSCORE', streaksKey, '-inf', now, 'LIMIT', 0, batch)
if #due == 0 then return {0, 0} end
local t = redis.call('TYPE', historyKey).ok
if t ~= 'none' and t ~= 'stream' then return {15} end
local fields = {'seq', 'coins'}
for i, member in ipairs(due) do fields[i + 2] = 'c:' .. member end
local meta = redis.call('HMGET', streamKey, unpack(fields))
local eventId, coinsTotal = tonumber(meta[1] or '0'), meta[2] or '0'

local closed, ended = 0, {}
for i, member in ipairs(due) do
  local combo = meta[i + 2]
  local n, at, fragment
  if combo then n, at, fragment = string.match(combo, '^(%d+)|(%d+)|(.*)$') end
  if at and now - tonumber(at) <= window then
    redis.call('ZADD', streaksKey, tonumber(at) + window, member)
  else
    if n then
      eventId = eventId + 1
      local event = '{"event_id":' .. fmt(eventId) .. ',"kind":"gift","ts":' .. ARGV[1] .. ','
        .. fragment .. '"count":0,"combo":' .. n .. ',"streak_end":true,"coins_total":'
        .. coinsTotal .. '}'
      redis.call('XADD', historyKey, 'MAXLEN', '~', historyMax, fmt(eventId) .. '-0', 'e', event)
      redis.call('PUBLISH', channel, event)
      closed = closed + 1
      ended[#ended + 1] = 'c:' .. member
    end
    redis.call('ZREM', streaksKey, member)
  end
end
if closed > 0 then
  redis.call('HSET', streamKey, 'seq', fmt(eventId))
  redis.call('HDEL', streamKey, unpack(ended))
end
return {0, closed}
