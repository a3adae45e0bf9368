--[[
  payment_record: how a payment record is written and read. Not a script:
  `--- @include "payment_record"` in a script is replaced by this file when
  scripts.py loads it. ledger/reconcile.py reads the same format; change the two together.

  A record is one string keyed by the provider's event id:
    applied  "<fingerprint>|<coins>|<credited>|<clawed>|<owed>"  the event's result
    pending  "<fingerprint>|pending"   claimed in the record's slot, not yet known to
             be applied in the user's (a payment across slots, docs/scaling.md)
  The fingerprint is "<user>|<type>|<package>"; ids never hold "|".
]]

local PENDING = 'pending'

-- The record of an applied event: its fingerprint and the result to answer again.
local function appliedRecord(fingerprint, coins, credited, clawed, owed)
  return fingerprint .. '|' .. fmt(coins) .. '|' .. fmt(credited) .. '|' .. fmt(clawed)
    .. '|' .. fmt(owed)
end

-- A stored record read back: fingerprint and result {coins, credited, clawed, owed}
-- when applied, fingerprint and nil when pending; nil when it is neither.
local function readRecord(record)
  local fp, coins, credited, clawed, owed = string.match(record, '^(.*)|(%d+)|(%d+)|(%d+)|(%d+)$')
  if fp then return fp, {tonumber(coins), tonumber(credited), tonumber(clawed), tonumber(owed)} end
  return string.match(record, '^(.*)|' .. PENDING .. '$'), nil
end
