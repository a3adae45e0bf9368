--[[
  battle_lock: the invited stream's step of an invite, in its slot: the stream is
  live, of another streamer, and in no other battle; it is locked to this battle
  (meta field `battle_lock`). Locked to it already: answers the same again.

  Input:
    KEYS[1] invited stream meta   {s:B}:meta
    ARGV[1] battle id             ARGV[2] the inviting streamer's id

  Output:
    {0, streamer id, streamer's display name}
    {2}  UNKNOWN_STREAM   {3} STREAM_NOT_LIVE   {4} SELF_GIFT (the same streamer)
    {21, battle id} BATTLE_CONFLICT: the stream is in that battle
]]
local metaKey, battleId, inviter = KEYS[1], ARGV[1], ARGV[2]
local meta = redis.call('HMGET', metaKey, 'streamer', 'status', 'battle_lock', 'streamer_name')
if not meta[1] then return {2} end
if meta[1] == inviter then return {4} end
if meta[3] == battleId then return {0, meta[1], meta[4] or meta[1]} end
if meta[2] ~= 'live' then return {3} end
if meta[3] then return {21, meta[3]} end
redis.call('HSET', metaKey, 'battle_lock', battleId)
return {0, meta[1], meta[4] or meta[1]}
