--[[
  gift_gate_batch: gift_gate for the gifts of one pass to one stream, in one call
  (ledger/transfer_batch.py): the stream's meta read once, a verdict a sender, each
  exactly gift_gate's. Reads only.

  Input (N gifts):
    KEYS[1] stream meta   {s:S}:meta
    ARGV[1] streamer id the caller expects to own the stream
    ARGV[1 + i] gift i's sender id

  Output:
    one verdict a gift, in their order: 0 the gift may go on, 2 UNKNOWN_STREAM,
    3 STREAM_NOT_LIVE, 4 SELF_GIFT
]]
local meta = redis.call('HMGET', KEYS[1], 'streamer', 'status')
local streamer, replies = ARGV[1], {}
local verdict = false
if not meta[1] or meta[1] ~= streamer then
  verdict = 2
elseif meta[2] ~= 'live' then
  verdict = 3
end
for i = 2, #ARGV do
  replies[i - 1] = verdict or (ARGV[i] == streamer and 4 or 0)
end
return replies
