--[[
  battle: a gift's side of a live battle, shared by send_gift, send_gifts (include
  "gift") and credit_stream (the stream's step of a gift across slots). Not a script:
  `--- @include "battle"` is replaced by this file when scripts.py loads a script.
  Needs "numbers". docs/battles.md has the whole design.

  The stream meta's field `battle` names the battle the stream is in while it is live
  (its gifts count); the gift scripts read it with the meta they read anyway, so a
  gift outside a battle pays one more HMGET field and nothing else. The side of the
  battle lives in the stream's slot: {s:S}:battle_side (id, ends_at, points, closed)
  and {s:S}:battle_top (sender -> coins counted). A gift counts when Redis's clock
  (TIME, read only here) is before `ends_at` and the side is not closed.
]]

-- The battle this gift counts for, {battle id, TIME as unix ms text}, or false. Reads
-- only: a caller calls it among its checks and `countBattle` after its first write.
local function battleOf(sideKey, battleId)
  if not battleId then return false end
  local side = redis.call('HMGET', sideKey, 'id', 'ends_at', 'closed')
  local endsAt = tonumber(side[2])
  if side[1] ~= battleId or side[3] or not endsAt then return false end
  local t = redis.call('TIME')
  local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if at >= endsAt then return false end
  return {battleId, fmt(at)}
end

-- Add the gift's coins to its side's points and to its sender's contribution.
local function countBattle(sideKey, topKey, costArg, sender)
  redis.call('HINCRBY', sideKey, 'points', costArg)
  redis.call('ZINCRBY', topKey, costArg, sender)
end
