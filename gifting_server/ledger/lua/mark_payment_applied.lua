--[[
  mark_payment_applied: step 3 of a payment on a cluster: record the result `recharge`
  gave in the user's slot in the global record, so that a redelivered event is
  answered by `claim_payment` alone. Idempotent: an applied record is left as it is.
  A record that is gone (its claim released after a refusal, while a concurrent
  duplicate applied the event) is written again.

  Input:
    KEYS[1] payment record     {ledger}:payment:<event_id>
    ARGV[1] request fingerprint (user|type|package)
    ARGV[2] coins after        ARGV[3] credited
    ARGV[4] clawed back        ARGV[5] owed after

  Output:
    {0}  the record holds the applied result
    {1}  IDEMPOTENCY_CONFLICT  the record names another fingerprint; left unchanged
    {16} INVALID_ARGUMENT      a number is not a non-negative integer
]]
--- @include "numbers"
--- @include "payment_record"
local recordKey = KEYS[1]
local fingerprint = ARGV[1]
local coins, credited = int(ARGV[2], 0, MAX), int(ARGV[3], 0, MAX)
local clawed, owed = int(ARGV[4], 0, MAX), int(ARGV[5], 0, MAX)
if not (coins and credited and clawed and owed and fingerprint ~= '') then return {16} end

local seen = redis.call('GET', recordKey)
if seen then
  local fp, result = readRecord(seen)
  if fp ~= fingerprint then return {1} end
  if result then return {0} end
end
redis.call('SET', recordKey, appliedRecord(fingerprint, coins, credited, clawed, owed))
return {0}
