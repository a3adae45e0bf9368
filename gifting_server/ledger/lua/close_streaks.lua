--[[
  close_streaks: announce the end of every streak of a stream whose quiet window
  has passed: one `gift` event with `streak_end: true` per streak. Atomic, so
  when several workers sweep the same stream each streak still ends exactly once.

  Input:
    KEYS[1] open streaks    {s:S}:streaks  (member "<sender>:<gift>", score = deadline ms)
    KEYS[2] stream meta     {s:S}:meta
    KEYS[3] stream history  {s:S}:history
    ARGV[1] now, unix ms    ARGV[2] combo quiet window, ms
    ARGV[3] history length cap  ARGV[4] pub/sub channel
    ARGV[5] combo key prefix {s:S}:combo:  (the combo key is prefix .. member)
    ARGV[6] most streaks to close in one call

  Output:
    {0, streaks_closed}
    {15} WRONG_KEY_TYPE
]]
local streaksKey, streamKey, historyKey = KEYS[1], KEYS[2], KEYS[3]
local now, window, historyMax = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local channel, comboPrefix, batch = ARGV[4], ARGV[5], ARGV[6]

local function fmt(n) return string.format('%.0f', n) end

local due = redis.call('ZRANGEBYSCORE', streaksKey, '-inf', now, 'LIMIT', 0, batch)
if #due == 0 then return {0, 0} end
local t = redis.call('TYPE', historyKey).ok
if t ~= 'none' and t ~= 'stream' then return {15} end
local meta = redis.call('HMGET', streamKey, 'seq', 'coins')
local eventId, coinsTotal = tonumber(meta[1] or '0'), meta[2] or '0'

local closed = 0
for _, member in ipairs(due) do
  local comboKey = comboPrefix .. member
  local c = redis.call('HMGET', comboKey, 'n', 'at', 'f')
  if c[2] and now - tonumber(c[2]) <= window then
    redis.call('ZADD', streaksKey, tonumber(c[2]) + window, member)
  else
    if c[1] and c[3] then
      eventId = eventId + 1
      local event = '{"event_id":' .. fmt(eventId) .. ',"kind":"gift","ts":' .. fmt(now) .. ','
        .. c[3] .. '"count":0,"combo":' .. c[1] .. ',"streak_end":true,"coins_total":'
        .. coinsTotal .. '}'
      redis.call('XADD', historyKey, 'MAXLEN', '~', historyMax, fmt(eventId) .. '-0', 'e', event)
      redis.call('PUBLISH', channel, event)
      closed = closed + 1
    end
    redis.call('ZREM', streaksKey, member)
    redis.call('DEL', comboKey)
  end
end
if closed > 0 then redis.call('HSET', streamKey, 'seq', fmt(eventId)) end
return {0, closed}
