--[[
  rotate_overlay_tokens: the owner revokes every overlay token of a stream minted so
  far. The stream's overlay generation goes up by one; tokens carry the generation
  they were minted at, and one below the stream's no longer counts. An
  `overlay_revoked` event (its `generation`) goes into the history and to pub/sub,
  so that every worker closes the overlay connections it holds with an older token.
  Works on an ended stream too: overlay links outlive a stream.
  The history's XADD is the first write: its id must be above the history's last
  (a meta restored behind its history breaks that), and failing first it changes
  nothing. No call after it can fail.

  Input:
    KEYS[1] stream meta     {s:S}:meta   (field overlay_gen: the current generation)
    KEYS[2] stream history  {s:S}:history
    ARGV[1] streamer id     ARGV[2] now, unix ms   ARGV[3] history length cap
    ARGV[4] pub/sub channel

  Output:
    {0, generation (the new one), event_id}
    {2}  UNKNOWN_STREAM     {13} NOT_STREAM_OWNER
    {15} WRONG_KEY_TYPE     {16} INVALID_ARGUMENT  {17} CORRUPT_VALUE (seq, overlay_gen)
]]
--- @include "numbers"
--- @include "event"

local streamKey, historyKey = KEYS[1], KEYS[2]
local streamer, now, historyMax, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not (type(streamer) == 'string' and digits(now) and digits(historyMax)
    and type(channel) == 'string') then
  return {16}
end
local meta = redis.call('HMGET', streamKey, 'streamer', 'seq', 'overlay_gen', 'webhook_log')
if not meta[1] then return {2} end
if meta[1] ~= streamer then return {13} end
if meta[2] and not digits(meta[2]) then return {17} end
local generation = stored(meta[3], 0)
if not generation or generation < 0 or generation >= MAX then return {17} end
local t = redis.call('TYPE', historyKey).ok
if t ~= 'none' and t ~= 'stream' then return {15} end

generation = generation + 1
local id = string.format('%.0f', tonumber(meta[2] or '0') + 1)
emitEvent(historyKey, historyMax, channel, id,
  event(id, 'overlay_revoked', now, '"generation":' .. fmt(generation)), meta[4])
redis.call('HSET', streamKey, 'seq', id, 'overlay_gen', fmt(generation))
return {0, generation, tonumber(id)}
