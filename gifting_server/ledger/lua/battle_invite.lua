--[[
  battle_invite: the first step of a battle invite, in the inviting stream's slot
  (docs/battles.md): the stream is live, its owner's, and in no other battle (field
  `battle_lock` of its meta: a pending invite or a live battle). Writes the battle's
  record in state `inviting` and locks the stream to it. The opponent's side is
  locked by the next step (battle_lock), then the record moves on (battle_step).
  The same idempotency key answers the battle it made again (to the stream's owner
  only: the owner is checked first).

  Input:
    KEYS[1] inviting stream meta   {s:A}:meta
    KEYS[2] battle record          {s:A}:battle:<id>
    KEYS[3] invitation record      {s:A}:battle_idem:<key>
    ARGV[1] streamer id (the token's)   ARGV[2] battle id (new, bt_<hex>.<A>)
    ARGV[3] request fingerprint         ARGV[4] opponent stream id
    ARGV[5] duration, s                 ARGV[6] now, unix ms
    ARGV[7] invitation record ttl, ms   ARGV[8] inviting stream id

  Output:
    {0, battle id, replayed(0/1)}: on a replay the first request's battle
    {1}  IDEMPOTENCY_CONFLICT   {2}  UNKNOWN_STREAM    {13} NOT_STREAM_OWNER
    {3}  STREAM_NOT_LIVE        {21, battle id} BATTLE_CONFLICT: the stream is in it
    {16} INVALID_ARGUMENT
]]
--- @include "numbers"

local metaKey, recordKey, inviteKey = KEYS[1], KEYS[2], KEYS[3]
local streamer, battleId, fingerprint, opponent = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local durationArg, nowArg, ttl, inviting = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if not (int(durationArg, 1, 86400) and digits(nowArg) and digits(ttl) and ttl ~= '0'
    and type(battleId) == 'string' and type(opponent) == 'string'
    and type(inviting) == 'string') then
  return {16}
end

-- The owner first: a replay is answered only to the stream's own streamer.
local meta = redis.call('HMGET', metaKey, 'streamer', 'status', 'battle_lock', 'streamer_name')
if not meta[1] then return {2} end
if meta[1] ~= streamer then return {13} end

local seen = redis.call('GET', inviteKey)
if seen then
  local fp, first = string.match(seen, '^(.*)\n(.*)$')
  if fp ~= fingerprint then return {1} end
  return {0, first, 1}
end

if meta[2] ~= 'live' then return {3} end
if meta[3] then return {21, meta[3]} end

redis.call('HSET', recordKey, 'status', 'inviting', 'a', inviting, 'b', opponent, 'a_streamer', streamer, 'a_name', meta[4] or streamer,
  'duration_s', durationArg, 'created_at', nowArg)
redis.call('HSET', metaKey, 'battle_lock', battleId)
redis.call('SET', inviteKey, fingerprint .. '\n' .. battleId, 'PX', ttl)
return {0, battleId, 0}
