--[[
  battle_start_side: the invited stream's side of an accepted battle, in its slot:
  the stream is locked to this battle; its side starts (include "battle_side") with
  the battle's `ends_at`. Started already (its meta's `battle` or `battle_closed`
  names it): answers the same again. The stream need not be live: one that ended
  meanwhile forfeits (docs/battles.md).

  Input:
    KEYS[1] invited stream meta   {s:B}:meta
    KEYS[2] its battle top        {s:B}:battle_top
    ARGV[1] battle id             ARGV[2] ends_at, unix ms

  Output:
    {0, started(1/0)}
    {21, battle id or ''} BATTLE_CONFLICT: the stream is not locked to this battle
    {16} INVALID_ARGUMENT
]]
--- @include "numbers"
--- @include "battle_side"

local metaKey, topKey, battleId, endsAt = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
if not digits(endsAt) then return {16} end
local meta = redis.call('HMGET', metaKey, 'battle_lock', 'battle', 'battle_closed')
if names(meta[2], battleId) or names(meta[3], battleId) then return {0, 0} end
if meta[1] ~= battleId then return {21, meta[1] or ''} end
startSide(metaKey, topKey, battleId, endsAt)
return {0, 1}
