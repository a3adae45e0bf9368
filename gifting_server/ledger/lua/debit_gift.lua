--[[
  debit_gift: the first step of a gift across slots (a Redis Cluster; one Redis
  runs send_gift): all in the sender's slot. Checks the idempotency key, the
  stream's verdict (gift_gate), the age rule and the wallet (rate limit, balance,
  own daily budget); then debits the coins, records the transfer in the outbox of
  the sender's slot and remembers the key with everything the credits need. From
  here the gift is committed: credit_stream and credit_streamer apply it, by the
  worker that debited it or, after a crash, by the relay of any worker, which reads
  the outbox (docs/scaling.md, "A gift across slots").

  Input:
    KEYS[1] idempotency record   {u:V}:idem:<key>
    KEYS[2] sender wallet        {u:V}:wallet
    KEYS[3] outbox of V's slot   {o:<tag>}:outbox  (transfer id -> debit time, unix ms)
    ARGV[1] sender id            ARGV[2] sender display name
    ARGV[3] request fingerprint (stream|gift|count)
    ARGV[4] coins: count x price ARGV[5] now, unix ms
    ARGV[6] sender is age-verified (1/0)   ARGV[7] age verification required (1/0)
    ARGV[8] gift rate per second ARGV[9] gift burst
    ARGV[10] idempotency ttl, ms
    ARGV[11] the stream's verdict: gift_gate's code (0: may gift)
    ARGV[12] transfer id, "<sender>:<key>"
    ARGV[13] transfer: what the credits need, one line of JSON (ledger/transfers.py)

  The record: "<fingerprint>\n<coins left>\n<sender's daily limit or empty>\n<transfer>".
  A key may hold send_gift's record instead, "<fingerprint>|<event id>|<coins left>|<combo>"
  (written on one Redis before the keys moved to a cluster): that gift is complete.

  Output:
    {0, coins_left, replayed(0/1), daily limit ('' when none), transfer}: on a
        replay, the first request's transfer
    {0, coins_left, 1, '', '', event_id, combo}: a replay of a gift send_gift made
    {1}  IDEMPOTENCY_CONFLICT    {2} UNKNOWN_STREAM   {3} STREAM_NOT_LIVE
    {4}  SELF_GIFT               {5} AGE_VERIFICATION_REQUIRED
    {6}  INSUFFICIENT_FUNDS      {7} DAILY_LIMIT_EXCEEDED   {8} RATE_LIMITED
    {16} INVALID_ARGUMENT        {17} CORRUPT_VALUE
  The outbox is not type-checked (see send_gift): reconcile names a wrong-typed one.
]]
--- @include "numbers"
--- @include "spend"

local idemKey, walletKey, outboxKey = KEYS[1], KEYS[2], KEYS[3]
local sender, senderName, fingerprint = ARGV[1], ARGV[2], ARGV[3]
local costArg, nowArg, idemTtl, verdict = ARGV[4], ARGV[5], ARGV[10], ARGV[11]
local transferId, transfer = ARGV[12], ARGV[13]

local cost, now = int(costArg, 0, MAX), int(nowArg, 0, MAX)
local ratePerS, burst = int(ARGV[8], 0, MAX), int(ARGV[9], 0, MAX)
if not (cost and now and ratePerS and burst and digits(idemTtl) and idemTtl ~= '0'
    and int(verdict, 0, 4) and type(transferId) == 'string' and type(transfer) == 'string'
    and not string.find(transfer, '\n', 1, true)) then
  return {16}
end

local seen = call('GET', idemKey)
if seen then
  local fp, coinsLeft, limit, first = string.match(seen, '^(.-)\n(%d+)\n([^\n]*)\n(.*)$')
  if not fp then
    local oneFp, eventId, oneCoinsLeft, combo = string.match(seen, '^(.*)|(%d+)|(%d+)|(%d+)$')
    if oneFp ~= fingerprint then return {1} end
    return {0, tonumber(oneCoinsLeft), 1, '', '', tonumber(eventId), tonumber(combo)}
  end
  if fp ~= fingerprint then return {1} end
  return {0, tonumber(coinsLeft), 1, limit, first}
end
if verdict ~= '0' then return {tonumber(verdict)} end
if ARGV[7] == '1' and ARGV[6] ~= '1' then return {5} end

local w = call('HMGET', walletKey, 'coins', 'limit', 'spent', 'spent_day',
  'rl_at', 'rl_tokens')
local day, dayText = utcDay(now)
local coinsLeft, spent, refilledAt, tokens, budgetDays, spentDay, spentBefore =
  checkSpend(walletKey, w, now, nowArg, day, dayText, cost, ratePerS, burst)
if not coinsLeft then return {spent} end

local coinsLeftText = writeSpend(walletKey, senderName, coinsLeft, spent, refilledAt,
  tokens, budgetDays, spentDay, spentBefore)
call('ZADD', outboxKey, nowArg, transferId)
local limit = w[2] or ''
call('SET', idemKey, fingerprint .. '\n' .. coinsLeftText .. '\n' .. limit .. '\n' .. transfer,
  'PX', idemTtl)
return {0, coinsLeft, 0, limit, transfer}
