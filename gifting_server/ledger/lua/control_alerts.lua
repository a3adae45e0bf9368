--[[
  control_alerts: the streamer's control of the alerts overlays of a stream, as one
  event on the stream (history and publish), so that every open alerts overlay acts
  at once and a client that resubscribes with `since` gets it too.
  pause, resume, skip, clear: an `alerts` event {action, paused}; pause and resume
  also store the paused state in the meta (field "alerts_paused": "1" or "0"),
  which a subscriber is told when it subscribes.
  replay: an `alerts` event {action, paused, event} carrying the stream's gift event
  ARGV[6] as it is in the history; refused when that event is not a gift there.
  test: a `gift` event with the fragment ARGV[7] (the caller puts `"test":true` in
  it), count and combo ARGV[8], streak_end true and the stream's coins_total as it
  is: it moves no money and touches no board, combo, goal or journal.
  Allowed on an ended stream too (a streamer sets up the overlays before going live).
  The history's XADD is the first write: its id must be above the history's last
  (a meta restored behind its history breaks that), and failing first it changes
  nothing. No call after it can fail.

  Input:
    KEYS[1] stream meta     {s:S}:meta
    KEYS[2] stream history  {s:S}:history
    ARGV[1] streamer id     ARGV[2] now, unix ms   ARGV[3] history length cap
    ARGV[4] pub/sub channel ARGV[5] action: pause|resume|skip|clear|replay|test
    ARGV[6] replay: the event id to show again ("" otherwise)
    ARGV[7] test: the event JSON fragment "sender":{..},"gift":{..},"test":true,
    ARGV[8] test: the count ("" otherwise)

  Output:
    {0, event_id}
    {2}  UNKNOWN_STREAM     {13} NOT_STREAM_OWNER  {18} UNKNOWN_EVENT (replay)
    {15} WRONG_KEY_TYPE     {16} INVALID_ARGUMENT  {17} CORRUPT_VALUE (seq, coins)
]]
--- @include "numbers"
--- @include "event"

-- The event `id` (decimal digits) from a history entry's field "e": the entry read from
-- "<id>-0" on (XRANGE ... COUNT 1), the event's own or one of a call's events, one a
-- line (see emitEvent); nil when the entry does not hold it.
local function historyEvent(entry, id)
  local head, at = '{"event_id":' .. id .. ',', 1
  if string.sub(entry, 1, #head) ~= head then
    at = string.find(entry, '\n' .. head, 1, true)
    if not at then return nil end
    at = at + 1
  end
  local stop = string.find(entry, '\n', at, true)
  return string.sub(entry, at, stop and stop - 1 or #entry)
end

local streamKey, historyKey = KEYS[1], KEYS[2]
local streamer, now, historyMax, channel, action = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local replayId, testFragment, testCount = ARGV[6], ARGV[7], ARGV[8]
local ACTIONS = {pause = true, resume = true, skip = true, clear = true, replay = true, test = true}
if not (digits(now) and digits(historyMax) and type(channel) == 'string'
    and type(action) == 'string' and ACTIONS[action]) then
  return {16}
end
if action == 'replay' and not digits(replayId) then return {16} end
if action == 'test' and not (digits(testCount) and testCount ~= '0'
    and type(testFragment) == 'string' and testFragment ~= '') then
  return {16}
end
local meta = redis.call('HMGET', streamKey, 'streamer', 'seq', 'alerts_paused', 'coins',
  'webhook_log')
if not meta[1] then return {2} end
if meta[1] ~= streamer then return {13} end
if (meta[2] and not digits(meta[2])) or (meta[4] and not digits(meta[4])) then return {17} end
local t = redis.call('TYPE', historyKey).ok
if t ~= 'none' and t ~= 'stream' then return {15} end

local paused = meta[3] == '1'
if action == 'pause' then paused = true elseif action == 'resume' then paused = false end
local id = string.format('%.0f', tonumber(meta[2] or '0') + 1)
local json
if action == 'test' then
  json = giftEvent(id, now, testFragment, testCount, testCount, 'true', meta[4] or '0')
else
  local fields = '"action":"' .. action .. '","paused":' .. tostring(paused)
  if action == 'replay' then
    if t == 'none' then return {18} end
    local entry = redis.call('XRANGE', historyKey, replayId .. '-0', '+', 'COUNT', 1)
    local shown = entry[1] and historyEvent(entry[1][2][2], replayId)
    if not (shown and string.find(shown, '^{"event_id":%d+,"kind":"gift",')) then return {18} end
    fields = fields .. ',"event":' .. shown
  end
  json = event(id, 'alerts', now, fields)
end

emitEvent(historyKey, historyMax, channel, id, json, meta[5])
if action == 'pause' or action == 'resume' then
  redis.call('HSET', streamKey, 'seq', id, 'alerts_paused', paused and '1' or '0')
else
  redis.call('HSET', streamKey, 'seq', id)
end
return {0, tonumber(id)}
