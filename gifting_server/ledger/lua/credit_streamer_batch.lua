--[[
  credit_streamer_batch: credit_streamer for the transfers of one flush to one
  streamer (and one day: the day board is among the keys), in one call, one after
  the other (ledger/transfer_batch.py): each exactly as credit_streamer runs it (its
  checks first, then its writes; a transfer seen before answers its first result).
  The diamonds still come from the lifetime coins received, transfer after transfer
  (include "earn"), so none is lost to rounding. As in send_gifts (include "gift"),
  the streamer's credit is read once and written once at the call's end, the
  platform's share and the held diamonds summed and added once, and the transfers
  journaled in one entry, a gift a line (`writeShared`; ledger/journal.py reads
  them as it reads send_gifts'). Those are written at the call's end, then the
  streamer's credit, then the transfers' records: a call that fails part way (a
  board, at a transfer's first write) or at its end leaves every transfer either
  credited whole or not credited, its diamonds unpaid (the relay finishes those with
  credit_streamer). The held bucket, the platform account and the journal are
  checked for their type before the call's first write: one planted with another
  type refuses every transfer (17), nothing written.

  Input (N transfers):
    KEYS[1] streamer wallet           {u:T}:wallet
    KEYS[2] streamer's held diamonds  {u:T}:held
    KEYS[3] platform account          {u:T}:platform
    KEYS[4] channel leaderboard, day  {u:T}:lb:day:<n>  (n: the debits' day)
    KEYS[5] channel leaderboard, all  {u:T}:lb:all
    KEYS[6] journal                   {u:T}:journal
    KEYS[6 + i] transfer i's record   {u:T}:credited:<transfer id>:<debit nonce>
    ARGV[1] streamer id     ARGV[2] record ttl, ms
    ARGV[2 + 14(i-1) + 1 .. 14i]  transfer i: sender id, stream id, gift id, count,
      coins, creator share (basis points, when debited), diamonds held until (unix
      ms, 0: not held), the debit's time (unix ms), the gift's event id, idempotency
      key, sender's daily limit or '', sender is age-verified (1/0), the battle
      credit_stream counted the gift for or '', when it counted it or ''

  Output:
    one reply a transfer, in their order, laid end to end in one flat list: 0,
    diamonds, replayed(0/1) (three values; credit_streamer's) or a code alone: 16
    INVALID_ARGUMENT, 17 CORRUPT_VALUE; every transfer 16 when the configuration or
    the layout is wrong, nothing written.
  Keys written without being read first are not type-checked (see send_gift):
  reconcile names a wrong-typed one.
]]
--- @include "numbers"
--- @include "event"
--- @include "spend"
--- @include "combo"
--- @include "earn"
--- @include "battle"
--- @include "gift"

local streamerKey, heldKey, platformKey, dayBoardKey, allBoardKey, journalKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local streamer, recordTtl = ARGV[1], ARGV[2]
local n = #KEYS - 6
local replies = {}
if not (n >= 1 and #ARGV == 2 + 14 * n and type(streamer) == 'string'
    and digits(recordTtl) and recordTtl ~= '0') then
  for i = 1, n >= 1 and n or 1 do replies[i] = 16 end
  return replies
end

local shared = newShared(false, '0')
-- The streamer's credit, read by the first transfer not credited before; written by
-- `finish`, not `writeShared`, so that it comes after the call's shared writes.
local sr = false
-- Every transfer's record, read with one MGET (one slot); `written`: the records this
-- call credits, so that a transfer twice in the call answers the first's result;
-- `credited`: their keys in order, for `finish` to write.
local prior, written, credited = call('MGET', unpack(KEYS, 7, 6 + n)), {}, {}

-- A key the call's end writes unread is absent or of the type it writes.
local function writable(key, kind)
  local found = call('TYPE', key).ok
  return found == 'none' or found == kind
end

-- The streamer's credit, read once; `sound`: its numbers parse and the keys the call's
-- end writes are of their types, checked before the call's first write: a held bucket,
-- platform account or journal planted with another type would otherwise fail the
-- call at its end, after its boards, leaving the transfers uncredited with whichever
-- of those writes came before the failing one done, for the relay to do again.
local function readStreamer()
  local s = call('HMGET', streamerKey, 'received', 'diamonds')
  local received, diamonds = tonumber(s[1] or '0'), tonumber(s[2] or '0')
  return {received = received, diamonds = diamonds, sound = received and diamonds
    and writable(heldKey, 'hash') and writable(platformKey, 'hash')
    and writable(journalKey, 'stream')}
end

-- The call's writes of the transfers credited so far, each transfer's money last: the
-- held bucket, the platform account and the journal (`writeShared`), then the
-- streamer's credit, then the records that count the transfers credited. A failure
-- at any of these (a held bucket or platform account holding no integer) leaves no
-- transfer counted, nor its diamonds paid: the relay credits each once, repaired.
local function finish()
  writeShared(shared)
  if sr and sr.changed then
    call('HSET', streamerKey, 'received', fmt(sr.received), 'diamonds', fmt(sr.diamonds))
  end
  for _, recordKey in ipairs(credited) do
    call('SET', recordKey, written[recordKey], 'PX', recordTtl)
  end
end

-- What a text means as a count, a price, a share or a hold's end, checked once a call
-- (the transfers of a call mostly repeat a few): `false` when it is none.
local checked = {}
local function once(kind, text, lo, hi)
  local seen = checked[kind]
  if not seen then
    seen = {}
    checked[kind] = seen
  end
  local n = seen[text]
  if n == nil then
    n = (kind ~= 'cost' or digits(text)) and int(text, lo, hi) or false
    seen[text] = n
  end
  return n
end

local function creditOne(i, recordKey, sender, streamId, giftId, countArg, costArg, shareArg,
    heldUntilArg, nowArg, eventId, idemName, limit, adultArg, battleId, battleAt)
  local cost, shareBps = once('cost', costArg, 0, MAX), once('share', shareArg, 0, 10000)
  local heldUntil, now = once('held', heldUntilArg, 0, MAX), int(nowArg, 0, MAX)
  if not (cost and shareBps and heldUntil and now and once('count', countArg, 1, MAX)
      and int(eventId, 1, MAX) and type(idemName) == 'string' and type(limit) == 'string'
      and type(battleId) == 'string') then
    return 16
  end
  local battle = false
  if battleId ~= '' then
    if not digits(battleAt) then return 16 end
    battle = {battleId, battleAt}
  end

  local seen = written[recordKey] or prior[i]
  if seen then return 0, tonumber(seen), 1 end

  if not sr then sr = readStreamer() end
  if not sr.sound then return 17 end
  local diamonds = creatorShare(sr.received + cost, shareBps) - creatorShare(sr.received, shareBps)
  local platformShare = cost - diamonds

  -- All checks passed: write. The boards first: written unread, they are what can
  -- still fail (a key planted with another type), and a transfer that fails must
  -- leave nothing in `shared`, `sr` or `credited`, which the call writes before its
  -- error: its diamonds written without its record would be paid again by each retry
  -- and relay pass.
  bumpChannelBoards(dayBoardKey, allBoardKey, costArg, cost, sender)
  sr.received, sr.diamonds, sr.changed = sr.received + cost, sr.diamonds + diamonds, true
  addEarnings(shared, heldKey, platformKey, heldUntil, heldUntilArg, now, diamonds,
    platformShare)
  local journal = shared.journals[journalKey]
  if not journal then
    journal = {gifts = {}, battles = {}, counted = false}
    shared.journals[journalKey] = journal
    shared.journalOrder[1] = journalKey
  end
  local j = #journal.gifts + 1
  local texts = shared.texts
  journal.gifts[j] = giftEntry(sender, streamer, streamId, giftId, countArg, costArg,
    textOf(texts, diamonds), textOf(texts, platformShare), shareArg, eventId, idemName,
    nowArg, limit ~= '' and limit, adultArg == '1')
  journal.battles[j] = battle and (battle[1] .. '|' .. battle[2]) or ''
  if battle then journal.counted = true end
  written[recordKey] = textOf(texts, diamonds)
  credited[#credited + 1] = recordKey
  return 0, diamonds, 0
end

local r = 0 -- the replies' length
for i = 1, n do
  local a = 2 + 14 * (i - 1)
  local ok, reply, diamonds, replayed = pcall(creditOne, i, KEYS[6 + i], ARGV[a + 1],
    ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7],
    ARGV[a + 8], ARGV[a + 9], ARGV[a + 10], ARGV[a + 11], ARGV[a + 12], ARGV[a + 13],
    ARGV[a + 14])
  if ok and reply == 0 then
    replies[r + 1], replies[r + 2], replies[r + 3] = 0, diamonds, replayed
    r = r + 3
  else
    r = r + 1
    replies[r] = refusalOf(ok, reply, finish, shared)
  end
end
finish()
return replies
