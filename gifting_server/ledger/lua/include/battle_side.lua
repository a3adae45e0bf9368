--[[
  battle_side: start a stream's side of a battle, shared by battle_accept (the
  inviting stream's side) and battle_start_side (the invited stream's). Not a
  script: `--- @include "battle_side"` is replaced by this file when scripts.py
  loads a script. The meta's `battle` field makes the stream's gifts count
  (include "battle"); the side and its top start empty.
]]
local function startSide(metaKey, sideKey, topKey, battleId, endsAtText)
  redis.call('DEL', sideKey, topKey)
  redis.call('HSET', sideKey, 'id', battleId, 'ends_at', endsAtText, 'points', '0')
  redis.call('HSET', metaKey, 'battle', battleId)
end
