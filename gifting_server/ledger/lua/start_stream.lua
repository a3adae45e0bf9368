--[[
  start_stream: a streamer goes live on a stream id. A stream id belongs to the
  streamer who first used it; going live again on one's own ended stream
  reopens it (event ids keep counting up). One write per call, after every check.

  Input:
    KEYS[1] stream meta     {s:S}:meta
    KEYS[2] stream history  {s:S}:history
    ARGV[1] streamer id     ARGV[2] now, unix ms
    ARGV[3] streamer's display name (optional; shown to viewers, kept as `streamer_name`)

  Output:
    {0, created(1) | reopened(2) | already live(0)}
    {14} STREAM_ID_TAKEN  the id belongs to another streamer
    {15} WRONG_KEY_TYPE   the history is not a stream
    {16} INVALID_ARGUMENT now is not an integer
]]
local streamKey, historyKey, streamer, now = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
-- The name is written only when given (a stream started without one keeps its meta as it was).
local named = {}
if ARGV[3] and ARGV[3] ~= '' then named = {'streamer_name', ARGV[3]} end
if type(streamer) ~= 'string' or type(now) ~= 'string' or #now > 15
    or not string.find(now, '^%d+$') then
  return {16}
end
local meta = redis.call('HMGET', streamKey, 'streamer', 'status')
if meta[1] and meta[1] ~= streamer then return {14} end
if meta[2] == 'live' then return {0, 0} end
if meta[1] then
  redis.call('HSET', streamKey, 'status', 'live', 'started_at', now, unpack(named))
  return {0, 2}
end
-- A new stream. Should a history outlive its meta (restored from a partial
-- backup), event ids continue after it: they must only ever grow.
local seq = 0
local t = redis.call('TYPE', historyKey).ok
if t == 'stream' then
  local last = redis.call('XREVRANGE', historyKey, '+', '-', 'COUNT', 1)
  if #last > 0 then seq = tonumber(string.match(last[1][1], '^(%d+)')) end
elseif t ~= 'none' then
  return {15}
end
redis.call('HSET', streamKey, 'streamer', streamer, 'status', 'live', 'started_at', now,
  'seq', string.format('%.0f', seq), unpack(named))
return {0, 1}
