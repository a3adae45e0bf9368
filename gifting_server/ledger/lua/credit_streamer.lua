--[[
  credit_streamer: the streamer's step of a gift across slots, all in the
  streamer's slot, once per transfer: diamonds (held as the hold says), the
  platform's share, the streamer's day and all-time boards, and the gift's journal
  entry, as send_gift writes them on one Redis. It checks no rule: the debit
  committed the gift. A transfer seen before answers its first result.

  Input:
    KEYS[1] streamer wallet           {u:T}:wallet
    KEYS[2] streamer's held diamonds  {u:T}:held
    KEYS[3] platform account          {u:T}:platform
    KEYS[4] channel leaderboard, day  {u:T}:lb:day:<n>  (n: the debit's day)
    KEYS[5] channel leaderboard, all  {u:T}:lb:all
    KEYS[6] journal                   {u:T}:journal
    KEYS[7] transfer record           {u:T}:credited:<transfer id>:<debit nonce>
    ARGV[1] sender id       ARGV[2] streamer id     ARGV[3] stream id
    ARGV[4] gift id         ARGV[5] count           ARGV[6] coins
    ARGV[7] creator share, basis points, when the gift was debited
    ARGV[8] diamonds held until this unix ms (0: not held)
    ARGV[9] the debit's time, unix ms               ARGV[10] the gift's event id
    ARGV[11] idempotency key                        ARGV[12] sender's daily limit or ''
    ARGV[13] sender is age-verified (1/0)           ARGV[14] record ttl, ms
    ARGV[15] the battle credit_stream counted the gift for, or '' (none)
    ARGV[16] when it counted it (that slot's TIME, unix ms), or ''
    ARGV[17] '1': the relay's pass (transfers.finish): the keys written unread are
             checked before the first write (below); absent otherwise

  Output:
    {0, diamonds, replayed(0/1)}
    {16} INVALID_ARGUMENT   {17} CORRUPT_VALUE
  Keys written without being read first are not type-checked (see send_gift):
  reconcile names a wrong-typed one. Except on the relay's pass: the relay tries a
  failed transfer again every pass, and each try would write again what came before
  the failing write (a board point, a journal line, held diamonds). So there the keys
  a write can fail on are checked first, and one planted with another type (or a
  platform account or held bucket holding no integer) refuses the transfer with 17
  and nothing written, until it is repaired; the worker's own first try, and
  credit_streamer_batch (which checks once a call), pay no such reads.
]]
--- @include "numbers"
--- @include "earn"

local streamerKey, heldKey, platformKey, dayBoardKey, allBoardKey, journalKey, recordKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]

-- A hash field holds an integer or nothing; false for a key of another type too (the
-- read's error, caught).
local function integerOrNone(key, field)
  local value = redis.pcall('HGET', key, field)
  return not value or digits(value)
end

local function typeIs(key, kind)
  local found = call('TYPE', key).ok
  return found == 'none' or found == kind
end

-- The relay's check: every write after the first (the day board's, which fails alone)
-- can succeed: the all-time board, the journal, the held bucket and the platform
-- account this transfer writes.
local function writable(diamonds, platformShare, heldUntil, heldUntilArg)
  return typeIs(allBoardKey, 'zset') and typeIs(journalKey, 'stream')
    and (platformShare == 0 or integerOrNone(platformKey, 'coins'))
    and (diamonds == 0 or heldUntil == 0 or integerOrNone(heldKey, heldUntilArg))
end
local sender, streamer, streamId, giftId = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local countArg, costArg, shareArg, heldUntilArg = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local nowArg, eventId, idemName, limit, recordTtl = ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[14]

local cost, shareBps = int(costArg, 0, MAX), int(shareArg, 0, 10000)
local heldUntil, now = int(heldUntilArg, 0, MAX), int(nowArg, 0, MAX)
if not (cost and shareBps and heldUntil and now and digits(costArg) and int(countArg, 1, MAX)
    and int(eventId, 1, MAX) and digits(recordTtl) and recordTtl ~= '0'
    and type(idemName) == 'string' and type(limit) == 'string') then
  return {16}
end

local battle = false
if ARGV[15] and ARGV[15] ~= '' then
  if not digits(ARGV[16]) then return {16} end
  battle = {ARGV[15], ARGV[16]}
end

local seen = call('GET', recordKey)
if seen then return {0, tonumber(seen), 1} end

local diamonds, platformShare, received, totalDiamonds = checkEarn(streamerKey, cost, shareBps)
if not diamonds then return {platformShare} end
if ARGV[17] == '1' and not writable(diamonds, platformShare, heldUntil, heldUntilArg) then
  return {17}
end

-- The boards and the journal first: written unread, they are what can still fail (a
-- key planted with another type), before the diamonds, which written without the
-- record would be paid again by each retry and relay pass.
bumpChannelBoards(dayBoardKey, allBoardKey, costArg, cost, sender)
journalGift(journalKey, sender, streamer, streamId, giftId, countArg, costArg, diamonds,
  platformShare, shareArg, eventId, idemName, nowArg, limit ~= '' and limit, ARGV[13] == '1',
  battle)
writeEarn(streamerKey, heldKey, platformKey, heldUntil, heldUntilArg, now, diamonds,
  platformShare, received, totalDiamonds)
call('SET', recordKey, fmt(diamonds), 'PX', recordTtl)
return {0, diamonds, 0}
