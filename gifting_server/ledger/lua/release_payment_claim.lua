--[[
  release_payment_claim: undo a claim (`claim_payment`) whose `recharge` in the user's
  slot refused the event (nothing to refund, a corrupt wallet...): nothing moved, so
  the event id is free again, as after the same refusal on a single Redis. Only a
  pending record with this fingerprint and this claim alone is removed: another
  delivery of the event that claimed it too may be applying it in the user's slot
  (the purchase it refunds came in between), so with several claims one is taken
  off and the event id stays held. An applied record (a duplicate succeeded) stays.
  A claim whose delivery died is never taken off: the event id then stays held.

  Input:
    KEYS[1] payment record     {ledger}:payment:<event_id>
    ARGV[1] request fingerprint (user|type|package)

  Output:
    {0, released(0/1)}  1: the record is gone, the event id free
]]
--- @include "numbers"
--- @include "payment_record"
local recordKey = KEYS[1]
local fingerprint = ARGV[1]

local seen = redis.call('GET', recordKey)
if not seen then return {0, 0} end
local fp, result, claims = readRecord(seen)
if fp ~= fingerprint or result then return {0, 0} end
if claims > 1 then
  redis.call('SET', recordKey, pendingRecord(fingerprint, claims - 1))
  return {0, 0}
end
redis.call('DEL', recordKey)
return {0, 1}
