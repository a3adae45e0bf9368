--[[
  set_stream_settings: the streamer changes some of the stream's message settings.
  Each setting is a meta field "m:<name>" holding its value as JSON text; a setting
  never set has the server's default, given here. Emits `settings {messages}` with
  every setting but the blocked words (viewers' pages read it; the list stays with
  the streamer), and answers every setting's value after the change.
  The history's XADD is the first write: its id must be above the history's last
  (a meta restored behind its history breaks that), and failing first it changes
  nothing. No call after it can fail.

  Input:
    KEYS[1] stream meta     {s:S}:meta
    KEYS[2] stream history  {s:S}:history
    ARGV[1] streamer id     ARGV[2] now, unix ms   ARGV[3] history length cap
    ARGV[4] pub/sub channel
    ARGV[5..] one triple per setting: name, new value as JSON ("" = unchanged),
              default as JSON; a name starting with "-" stays out of the event

  Output:
    {0, event_id, value 1, value 2, ...}  (JSON text, in the order given)
    {2}  UNKNOWN_STREAM     {13} NOT_STREAM_OWNER
    {15} WRONG_KEY_TYPE     {16} INVALID_ARGUMENT  {17} CORRUPT_VALUE (seq)
]]
--- @include "numbers"
--- @include "event"

local streamKey, historyKey = KEYS[1], KEYS[2]
local streamer, now, historyMax, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not (digits(now) and digits(historyMax) and type(channel) == 'string'
    and #ARGV >= 7 and (#ARGV - 4) % 3 == 0) then
  return {16}
end
local fields = {'streamer', 'seq'}
for i = 5, #ARGV, 3 do
  if not (string.find(ARGV[i], '^%-?[a-z_]+$') and ARGV[i + 2] ~= '') then return {16} end
  fields[#fields + 1] = 'm:' .. string.gsub(ARGV[i], '^%-', '')
end
local meta = redis.call('HMGET', streamKey, unpack(fields))
if not meta[1] then return {2} end
if meta[1] ~= streamer then return {13} end
if meta[2] and not digits(meta[2]) then return {17} end
local t = redis.call('TYPE', historyKey).ok
if t ~= 'none' and t ~= 'stream' then return {15} end

local values, public, changes = {}, {}, {}
for i = 5, #ARGV, 3 do
  local at = (i - 5) / 3 + 1
  local value = ARGV[i + 1]
  if value ~= '' then
    changes[#changes + 1] = fields[at + 2]
    changes[#changes + 1] = value
  else
    value = meta[at + 2] or ARGV[i + 2]
  end
  values[at] = value
  if string.sub(ARGV[i], 1, 1) ~= '-' then
    public[#public + 1] = '"' .. ARGV[i] .. '":' .. value
  end
end
local id = fmt(tonumber(meta[2] or '0') + 1)
emitEvent(historyKey, historyMax, channel, id,
  event(id, 'settings', now, '"messages":{' .. table.concat(public, ',') .. '}'),
  redis.call('HGET', streamKey, 'webhook_log') or nil)
changes[#changes + 1] = 'seq'
changes[#changes + 1] = id
redis.call('HSET', streamKey, unpack(changes))
local answer = {0, tonumber(id)}
for i = 1, #values do answer[#answer + 1] = values[i] end
return answer
