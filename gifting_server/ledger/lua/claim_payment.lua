--[[
  claim_payment: step 1 of a payment on a cluster (docs/scaling.md, "Payments across
  slots"): claim the provider's event id in its global record's slot, before
  `recharge` applies it in the user's slot with the user's own record. A provider
  event id names one payment, whichever user it is for: the claim is what refuses
  it for a second user or with other content, before any coin moves.

  Input:
    KEYS[1] payment record     {ledger}:payment:<event_id>
    ARGV[1] request fingerprint (user|type|package)

  Output:
    {0, 0}  claimed: the record was absent (now pending) or pending with this
            fingerprint (a retry after a crash); apply it in the user's slot
    {0, 1, coins_after, credited, clawed_back, owed_after}  applied before: answer
            this result again, nothing to do
    {1}  IDEMPOTENCY_CONFLICT  the event id was claimed with another fingerprint
    {16} INVALID_ARGUMENT      the fingerprint is empty
]]
--- @include "numbers"
--- @include "payment_record"
local recordKey = KEYS[1]
local fingerprint = ARGV[1]
if type(fingerprint) ~= 'string' or fingerprint == '' then return {16} end

local seen = redis.call('GET', recordKey)
if not seen then
  redis.call('SET', recordKey, fingerprint .. '|' .. PENDING)
  return {0, 0}
end
local fp, result = readRecord(seen)
if fp ~= fingerprint then return {1} end
if result then return {0, 1, result[1], result[2], result[3], result[4]} end
return {0, 0}
