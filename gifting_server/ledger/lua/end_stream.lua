--[[
  end_stream: the owner ends a live stream; viewers get a `stream_ended` event.
  Ending an ended stream answers OK again and changes nothing.
  The history's XADD is the first write: its id must be above the history's last
  (a meta restored behind its history breaks that), and failing first it changes
  nothing. No call after it can fail.

  Input:
    KEYS[1] stream meta     {s:S}:meta
    KEYS[2] stream history  {s:S}:history
    ARGV[1] streamer id     ARGV[2] now, unix ms   ARGV[3] history length cap
    ARGV[4] pub/sub channel

  Output:
    {0, event_id (0 when already ended), the battle the stream is locked to or ''}
    (a stream that ends in a battle forfeits it: ledger/battles.py takes it from here)
    {2}  UNKNOWN_STREAM     {13} NOT_STREAM_OWNER
    {15} WRONG_KEY_TYPE     {16} INVALID_ARGUMENT  {17} CORRUPT_VALUE (seq)
]]
--- @include "numbers"
--- @include "event"

local streamKey, historyKey = KEYS[1], KEYS[2]
local streamer, now, historyMax, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not (digits(now) and digits(historyMax) and type(channel) == 'string') then return {16} end
local meta = redis.call('HMGET', streamKey, 'streamer', 'status', 'seq', 'battle_lock',
  'webhook_log')
if not meta[1] then return {2} end
if meta[1] ~= streamer then return {13} end
if meta[2] ~= 'live' then return {0, 0, meta[4] or ''} end
if meta[3] and not digits(meta[3]) then return {17} end
local t = redis.call('TYPE', historyKey).ok
if t ~= 'none' and t ~= 'stream' then return {15} end

local eventId = tonumber(meta[3] or '0') + 1
local id = string.format('%.0f', eventId)
emitEvent(historyKey, historyMax, channel, id, event(id, 'stream_ended', now), meta[5])
redis.call('HSET', streamKey, 'status', 'ended', 'seq', id, 'ended_at', now)
return {0, eventId, meta[4] or ''}
