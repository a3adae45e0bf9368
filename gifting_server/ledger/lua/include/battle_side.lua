--[[
  battle_side: start a stream's side of a battle, shared by battle_accept (the
  inviting stream's side) and battle_start_side (the invited stream's). Not a
  script: `--- @include "battle_side"` is replaced by this file when scripts.py
  loads a script. The meta's `battle` field makes the stream's gifts count
  (include "battle"); the side's points and its top start empty.
]]
local function startSide(metaKey, topKey, battleId, endsAtText)
  redis.call('DEL', topKey)
  redis.call('HDEL', metaKey, 'battle_closed')
  redis.call('HSET', metaKey, 'battle', battleId .. '|' .. endsAtText, 'battle_points', '0')
end

-- Whether the meta field `value` ("<battle id>|<time>") names this battle.
local function names(value, battleId)
  return value ~= false and string.sub(value, 1, #battleId + 1) == battleId .. '|'
end
