--[[
  recharge: apply one payment-provider event (a purchase or its refund) to a wallet.
  Idempotent by the provider's event id, through the payment record KEYS[1]: on a
  single Redis the global record (the one call does it all); on a cluster the user's
  own record, after `claim_payment` claimed the event id in the global record's slot
  (docs/scaling.md, "Payments across slots"). The coins come from the server's
  package list (ARGV[5]), never from the request body. A refund takes back
  what is still unspent and records the rest as owed; a later purchase pays
  the debt first. A pending record with this fingerprint (a claim, see
  lua/include/payment_record.lua) is applied and replaced. Every argument and
  stored number is validated before the first write, so no call after it can fail.

  Input:
    KEYS[1] payment record     {ledger}:payment:<event_id>  (one per provider event), or
                               {u:U}:payment:<event_id>  (the user's, on a cluster)
    KEYS[2] wallet             {u:U}:wallet
    KEYS[3] purchases          {u:U}:purchases   (package id -> un-refunded count)
    KEYS[4] journal            {u:U}:journal
    ARGV[1] user id            ARGV[2] provider event id
    ARGV[3] event type: payment.succeeded | payment.refunded
    ARGV[4] package id         ARGV[5] package coins
    ARGV[6] request fingerprint (user|type|package)
    ARGV[7] now, unix ms
    ARGV[8] payer id from the provider (who paid: card, account), or "" when unknown;
            journaled as `payer` for the risk report, never part of the fingerprint

  Output:
    {0, coins_after, credited, clawed_back, owed_after, replayed(0/1)}
    {1}  IDEMPOTENCY_CONFLICT  the event id was seen with other content (or another user)
    {9}  NOTHING_TO_REFUND     no un-refunded purchase of the package
    {15} WRONG_KEY_TYPE        the journal is not a stream; nothing written
    {16} INVALID_ARGUMENT      an unknown event type, or coins or now not an integer
    {17} CORRUPT_VALUE         a stored balance or count is not an integer
]]
--- @include "numbers"
--- @include "payment_record"
local recordKey, walletKey, purchasesKey, journalKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user, eventId, kind, packageId = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local fingerprint, now, payer = ARGV[6], ARGV[7], ARGV[8]

local packageCoins = int(ARGV[5], 0, MAX)
if not (packageCoins and int(now, 0, MAX) and type(payer) == 'string'
    and (kind == 'payment.succeeded' or kind == 'payment.refunded')) then
  return {16}
end

local function journal(fields)
  if payer ~= '' then
    fields[#fields + 1] = 'payer'
    fields[#fields + 1] = payer
  end
  redis.call('XADD', journalKey, '*', unpack(fields))
end

local seen = redis.call('GET', recordKey)
if seen then
  local fp, result = readRecord(seen)
  if fp ~= fingerprint then return {1} end
  if result then return {0, result[1], result[2], result[3], result[4], 1} end
end

local w = redis.call('HMGET', walletKey, 'coins', 'owed')
local bought = stored(redis.call('HGET', purchasesKey, packageId), 0)
local coins, owed = stored(w[1], 0), stored(w[2], 0)
if not (bought and coins and owed) then return {17} end
local t = redis.call('TYPE', journalKey).ok
if t ~= 'none' and t ~= 'stream' then return {15} end

local credited, clawed = 0, 0
if kind == 'payment.succeeded' then
  local settled = math.min(owed, packageCoins)
  credited = packageCoins - settled
  coins, owed = coins + credited, owed - settled
  redis.call('HINCRBY', purchasesKey, packageId, 1)
  journal({'type', 'purchase', 'user', user, 'payment', eventId,
    'package', packageId, 'coins', fmt(packageCoins), 'settled', fmt(settled), 'at', now})
else
  if bought < 1 then return {9} end
  clawed = math.min(coins, packageCoins)
  local unpaid = packageCoins - clawed
  coins, owed = coins - clawed, owed + unpaid
  redis.call('HINCRBY', purchasesKey, packageId, -1)
  journal({'type', 'refund', 'user', user, 'payment', eventId,
    'package', packageId, 'coins', fmt(packageCoins), 'clawed', fmt(clawed),
    'owed', fmt(unpaid), 'at', now})
end
redis.call('HSET', walletKey, 'coins', fmt(coins), 'owed', fmt(owed))
redis.call('SET', recordKey, appliedRecord(fingerprint, coins, credited, clawed, owed))
return {0, coins, credited, clawed, owed, 0}
