--[[
  release_payment_claim: undo a claim (`claim_payment`) whose `recharge` in the user's
  slot refused the event (nothing to refund, a corrupt wallet...): nothing moved, so
  the event id is free again, as after the same refusal on a single Redis. Only a
  pending record with this fingerprint is removed; an applied one (a concurrent
  duplicate of the event succeeded) stays.

  Input:
    KEYS[1] payment record     {ledger}:payment:<event_id>
    ARGV[1] request fingerprint (user|type|package)

  Output:
    {0, released(0/1)}
]]
--- @include "numbers"
--- @include "payment_record"
local recordKey = KEYS[1]
local fingerprint = ARGV[1]

local seen = redis.call('GET', recordKey)
if not seen then return {0, 0} end
local fp, result = readRecord(seen)
if fp ~= fingerprint or result then return {0, 0} end
redis.call('DEL', recordKey)
return {0, 1}
