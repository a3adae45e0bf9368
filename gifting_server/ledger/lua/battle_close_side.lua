--[[
  battle_close_side: close a stream's side of a battle, in its slot, once its time
  is up by this slot's clock (TIME at or past `ends_at`), or at once when a stream
  of the battle ended before its end (a forfeit: ARGV[2] = 1). From here no gift
  counts for the side: the meta's `battle` is removed and `battle_closed` =
  "<battle id>|<TIME, unix ms>" written. Closed already: answers the same again.

  Input:
    KEYS[1] stream meta        {s:S}:meta
    KEYS[2] its battle top     {s:S}:battle_top
    ARGV[1] battle id          ARGV[2] close before the end (1/0)
    ARGV[3] top contributors answered

  Output:
    {0, points, closed at (TIME, unix ms), the stream's status, its ended_at or '',
        {sender, coins, sender, coins, ...} best first}
    {22} UNKNOWN_BATTLE (the stream's side is not this battle's)
    {23, ms left} BATTLE_NOT_OVER   {17} CORRUPT_VALUE   {16} INVALID_ARGUMENT
]]
--- @include "numbers"
--- @include "battle_side"

local metaKey, topKey = KEYS[1], KEYS[2]
local battleId, early, topN = ARGV[1], ARGV[2] == '1', int(ARGV[3], 1, 100)
if not topN then return {16} end
local meta = redis.call('HMGET', metaKey, 'battle', 'battle_closed', 'battle_points',
  'status', 'ended_at')
local points = stored(meta[3], 0)
if not points then return {17} end
local closed
if names(meta[2], battleId) then
  closed = string.sub(meta[2], #battleId + 2)
elseif names(meta[1], battleId) then
  local endsAt = int(string.sub(meta[1], #battleId + 2), 0, MAX)
  if not endsAt then return {17} end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now < endsAt and not early then return {23, endsAt - now} end
  closed = fmt(now)
  redis.call('HDEL', metaKey, 'battle')
  redis.call('HSET', metaKey, 'battle_closed', battleId .. '|' .. closed)
else
  return {22}
end
local top = redis.call('ZREVRANGE', topKey, 0, topN - 1, 'WITHSCORES')
return {0, points, closed, meta[4] or '', meta[5] or '', top}
