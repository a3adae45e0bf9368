--[[
  battle_release: a stream leaves a battle that is over for it (declined,
  cancelled, expired, ended): its meta's `battle_lock` and `battle` are removed when
  they name this battle. Safe to repeat, and to run for a lock a crash left behind.

  Input:
    KEYS[1] stream meta   {s:S}:meta
    ARGV[1] battle id

  Output:
    {0, released(1/0)}
]]
--- @include "battle_side"

local metaKey, battleId = KEYS[1], ARGV[1]
local meta = redis.call('HMGET', metaKey, 'battle_lock', 'battle')
local fields = {}
if meta[1] == battleId then fields[#fields + 1] = 'battle_lock' end
if names(meta[2], battleId) then fields[#fields + 1] = 'battle' end
if #fields == 0 then return {0, 0} end
redis.call('HDEL', metaKey, unpack(fields))
return {0, 1}
