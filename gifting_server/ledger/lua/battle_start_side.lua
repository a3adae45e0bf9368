--[[
  battle_start_side: the invited stream's side of an accepted battle, in its slot:
  the stream is locked to this battle; its side starts (include "battle_side") with
  the battle's `ends_at`. Started already: answers the same again. The stream need
  not be live: one that ended meanwhile forfeits (docs/battles.md).

  Input:
    KEYS[1] invited stream meta   {s:B}:meta
    KEYS[2] its battle side       {s:B}:battle_side
    KEYS[3] its battle top        {s:B}:battle_top
    ARGV[1] battle id             ARGV[2] ends_at, unix ms

  Output:
    {0, started(1/0)}
    {21, battle id or ''} BATTLE_CONFLICT: the stream is not locked to this battle
    {16} INVALID_ARGUMENT
]]
--- @include "numbers"
--- @include "battle_side"

local metaKey, sideKey, topKey, battleId, endsAt = KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]
if not digits(endsAt) then return {16} end
if redis.call('HGET', sideKey, 'id') == battleId then return {0, 0} end
local lock = redis.call('HGET', metaKey, 'battle_lock')
if lock ~= battleId then return {21, lock or ''} end
startSide(metaKey, sideKey, topKey, battleId, endsAt)
return {0, 1}
