--[[
  gift_gate: may this sender gift on this stream? The stream's checks of a gift
  across slots (a Redis Cluster), read before its debit so that a gift they refuse
  moves no coin. The debit takes the verdict as an argument and applies it after
  its idempotency check, so a retry of a gift that passed is answered its result
  even after the stream ended (docs/scaling.md, "A gift across slots"). Reads only.

  Input:
    KEYS[1] stream meta   {s:S}:meta
    ARGV[1] streamer id the caller expects to own the stream
    ARGV[2] sender id

  Output:
    {0} the gift may go on
    {2} UNKNOWN_STREAM   {3} STREAM_NOT_LIVE   {4} SELF_GIFT
]]
local meta = redis.call('HMGET', KEYS[1], 'streamer', 'status')
if not meta[1] or meta[1] ~= ARGV[1] then return {2} end
if meta[2] ~= 'live' then return {3} end
if meta[1] == ARGV[2] then return {4} end
return {0}
