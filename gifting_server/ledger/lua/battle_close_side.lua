--[[
  battle_close_side: close a stream's side of a battle, in its slot, once its time
  is up by this slot's clock (TIME at or past `ends_at`), or at once when a stream
  of the battle ended before its end (a forfeit: ARGV[2] = 1). From here no gift
  counts for the side (the meta's `battle` is removed, the side marked `closed`).
  Closed already: answers the same again.

  Input:
    KEYS[1] stream meta        {s:S}:meta
    KEYS[2] its battle side    {s:S}:battle_side
    KEYS[3] its battle top     {s:S}:battle_top
    ARGV[1] battle id          ARGV[2] close before the end (1/0)
    ARGV[3] top contributors answered

  Output:
    {0, points, closed at (TIME, unix ms), the stream's status, its ended_at or '',
        {sender, coins, sender, coins, ...} best first}
    {22} UNKNOWN_BATTLE (the side is not this battle's)
    {23, ms left} BATTLE_NOT_OVER   {17} CORRUPT_VALUE   {16} INVALID_ARGUMENT
]]
--- @include "numbers"

local metaKey, sideKey, topKey = KEYS[1], KEYS[2], KEYS[3]
local battleId, early, topN = ARGV[1], ARGV[2] == '1', int(ARGV[3], 1, 100)
if not topN then return {16} end
local side = redis.call('HMGET', sideKey, 'id', 'ends_at', 'points', 'closed')
if side[1] ~= battleId then return {22} end
local endsAt, points = stored(side[2], nil), stored(side[3], 0)
if not (endsAt and points) then return {17} end
local closed = side[4]
if not closed then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now < endsAt and not early then return {23, endsAt - now} end
  closed = fmt(now)
  redis.call('HSET', sideKey, 'closed', closed)
  if redis.call('HGET', metaKey, 'battle') == battleId then redis.call('HDEL', metaKey, 'battle') end
end
local meta = redis.call('HMGET', metaKey, 'status', 'ended_at')
local top = redis.call('ZREVRANGE', topKey, 0, topN - 1, 'WITHSCORES')
return {0, points, closed, meta[1] or '', meta[2] or '', top}
