--[[
  battle_accept: the invited streamer accepts, in the inviting stream's slot (the
  record's): the invite is still open by Redis's clock (TIME before `expires_at`),
  and the inviting stream is live and locked to this battle. Fixes the battle's end,
  `ends_at` = TIME + duration, moves the record to `accepting` and starts the
  inviting stream's side (include "battle_side"). The invited stream's side is
  started next (battle_start_side), then the record moves to `live` (battle_step).

  Input:
    KEYS[1] battle record          {s:A}:battle:<id>
    KEYS[2] inviting stream meta   {s:A}:meta
    KEYS[3] its battle top         {s:A}:battle_top
    ARGV[1] battle id

  Output:
    {0, accepted(1/0), state, ends_at or ''}: not `invited` any more, the record's
        state is answered as it is (0)
    {22} UNKNOWN_BATTLE   {24} BATTLE_EXPIRED (the invite's time is up)
    {3}  STREAM_NOT_LIVE (the inviting stream ended or left the battle)
    {17} CORRUPT_VALUE
]]
--- @include "numbers"
--- @include "battle_side"

local recordKey, metaKey, topKey, battleId = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local record = redis.call('HMGET', recordKey, 'status', 'expires_at', 'duration_s', 'ends_at')
if not record[1] then return {22} end
if record[1] ~= 'invited' then return {0, 0, record[1], record[4] or ''} end
local expiresAt, duration = stored(record[2], nil), stored(record[3], nil)
if not (expiresAt and duration) then return {17} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= expiresAt then return {24} end
local meta = redis.call('HMGET', metaKey, 'status', 'battle_lock')
if meta[1] ~= 'live' or meta[2] ~= battleId then return {3} end

local endsAt = fmt(now + duration * 1000)
redis.call('HSET', recordKey, 'status', 'accepting', 'started_at', fmt(now), 'ends_at', endsAt)
startSide(metaKey, topKey, battleId, endsAt)
return {0, 1, 'accepting', endsAt}
