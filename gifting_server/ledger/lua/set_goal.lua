--[[
  set_goal: the streamer sets the stream's goal, held on the stream: a coin target,
  a title, and the stream's coin count when the goal started counting (its
  `counted_from`). A goal set for the first time, or with reset, counts from the
  stream's coins now; otherwise it keeps counting from where it did (a new target
  or title loses no progress). Gifts move it with no write of their own: progress =
  a gift event's coins_total - counted_from. Emits `goal {target, progress, title,
  counted_from}`; the meta keeps "goal" (the fragment "target":..,"title":..,
  "counted_from":.., which a subscriber is told) and "goal_from".
  The history's XADD is the first write: its id must be above the history's last
  (a meta restored behind its history breaks that), and failing first it changes
  nothing. No call after it can fail.

  Input:
    KEYS[1] stream meta     {s:S}:meta
    KEYS[2] stream history  {s:S}:history
    ARGV[1] streamer id     ARGV[2] now, unix ms   ARGV[3] history length cap
    ARGV[4] pub/sub channel ARGV[5] target, coins (1..2^53-1)
    ARGV[6] title, a JSON string ("\"Road to 10k\"")
    ARGV[7] reset: "1" counts from now, "0" keeps counting

  Output:
    {0, event_id, progress, counted_from}
    {2}  UNKNOWN_STREAM     {13} NOT_STREAM_OWNER
    {15} WRONG_KEY_TYPE     {16} INVALID_ARGUMENT  {17} CORRUPT_VALUE (seq, coins, goal_from)
]]
--- @include "numbers"
--- @include "event"

local streamKey, historyKey = KEYS[1], KEYS[2]
local streamer, now, historyMax, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local target, title, reset = ARGV[5], ARGV[6], ARGV[7]
if not (digits(now) and digits(historyMax) and type(channel) == 'string'
    and digits(target) and target ~= '0' and type(title) == 'string'
    and string.find(title, '^".*"$') and (reset == '1' or reset == '0')) then
  return {16}
end
local meta = redis.call('HMGET', streamKey, 'streamer', 'seq', 'coins', 'goal_from', 'webhook_log')
if not meta[1] then return {2} end
if meta[1] ~= streamer then return {13} end
for i = 2, 4 do
  if meta[i] and not digits(meta[i]) then return {17} end
end
local t = redis.call('TYPE', historyKey).ok
if t ~= 'none' and t ~= 'stream' then return {15} end

local coins = meta[3] or '0'
local from = coins
if reset == '0' and meta[4] then from = meta[4] end
local progress = fmt(math.max(0, tonumber(coins) - tonumber(from)))
local goal = '"target":' .. target .. ',"title":' .. title .. ',"counted_from":' .. from
local id = fmt(tonumber(meta[2] or '0') + 1)
emitEvent(historyKey, historyMax, channel, id, event(id, 'goal', now,
  '"target":' .. target .. ',"progress":' .. progress .. ',"title":' .. title
  .. ',"counted_from":' .. from), meta[5])
redis.call('HSET', streamKey, 'seq', id, 'goal', goal, 'goal_from', from)
return {0, tonumber(id), tonumber(progress), tonumber(from)}
