--[[
  battle: a gift's side of a live battle, shared by send_gift, send_gifts (include
  "gift") and credit_stream (the stream's step of a gift across slots). Not a script:
  `--- @include "battle"` is replaced by this file when scripts.py loads a script.
  Needs "numbers". docs/battles.md has the whole design.

  While the stream's side of a battle counts, its meta holds `battle` =
  "<battle id>|<ends_at, unix ms>". The gift scripts read it with the meta they read
  anyway, so a gift outside a battle pays one more HMGET field and nothing else
  (BENCHMARKS.md). A gift counts when Redis's clock (TIME, read only in a battle) is
  before `ends_at`: its coins go to the meta's `battle_points` and to its sender's
  contribution in {s:S}:battle_top. battle_close_side removes `battle`.
]]

-- The battle this gift counts for, {battle id, TIME as unix ms text}, or false; `live`
-- is the meta's `battle` field. Reads only: a caller calls it among its checks, and
-- `countBattle` after its first write.
local function battleOf(live)
  local battleId, endsAt = string.match(live, '^(.+)|(%d+)$')
  if not battleId then return false end
  local t = call('TIME')
  local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if at >= tonumber(endsAt) then return false end
  return {battleId, fmt(at)}
end

-- Add the gift's coins to its side's points and to its sender's contribution. The
-- top first: written unread, it can fail (a key planted with another type), and the
-- points written before that failure would be counted again by the step's retry.
local function countBattle(metaKey, topKey, costArg, sender)
  call('ZINCRBY', topKey, costArg, sender)
  call('HINCRBY', metaKey, 'battle_points', costArg)
end
