--[[
  send_gifts: the gifts one worker's flush sends to one Redis, in one call, one
  after the other: each exactly as send_gift runs it (include "gift": its checks
  first, then its writes), so a refused gift writes nothing and the others go on,
  and a gift sees what the gifts before it in the call wrote (the same idempotency
  key twice: the second is answered from the first's record). What one call costs
  Redis whatever its size (the script's start, its functions, the configuration)
  is paid once for the batch, and the keys and arguments of a stream (the stream's
  and its streamer's eleven keys, its owner, id and channel) once for all its gifts:
  and a stream's meta and its streamer's credit are read once and written once, at
  the call's end (include "gift": `writeShared`; the platform's share and the held
  diamonds summed); a streamer's gifts are one journal entry (a gift a line) and a
  stream's events one published message (an event a line), both at the call's end,
  and a stream's history, appended to untrimmed, is trimmed to its cap once (one
  XTRIM MAXLEN ~); docs/performance.md, "Batching". Every key is still declared,
  so the call is legal on a cluster too. A history ahead of its meta refuses that
  stream's gifts alone (CORRUPT_VALUE, nothing of them written). A script error
  (only a key planted with another type by someone with Redis access can raise one
  after the checks) ends the call with the gifts before it partly written, as it
  leaves a lone send_gift: `reconcile` names such a key.

  Input (G streams, N gifts):
    ARGV[1]  age verification required (1/0)
    ARGV[2]  creator share, basis points
    ARGV[3]  combo quiet window, ms
    ARGV[4]  gift rate per second    ARGV[5]  gift burst
    ARGV[6]  idempotency ttl, ms     ARGV[7]  history length cap
    ARGV[8]  1: a stream's events of the call published as one message, one event a
             line; 0: one message an event (a worker older than that reads only those)
    ARGV[9]  G
    stream g (1..G), as send_gift names them:
      KEYS[11(g-1) + 1 .. 11g]  stream meta, streamer wallet, streamer's held
        diamonds, platform account, stream leaderboard, channel leaderboard day and
        all, open streaks, journal, stream history, battle top (send_gift's KEYS[3..13])
      ARGV[9 + 5(g-1) + 1 .. 5g]  streamer id the caller expects to own the stream,
        stream id, pub/sub channel, now (unix ms), diamonds held until (unix ms, 0:
        not held): the clock is read once for the stream's gifts of the call, which
        are all stamped with it (ledger/gift_batch.py; a stream's gifts on both sides
        of midnight are two streams, their day boards differ)
    gift i (1..N):
      KEYS[11G + 2(i-1) + 1], [+ 2]  idempotency record, viewer wallet
      ARGV[9 + 5G + 10(i-1) + 1 .. 10i]  its stream g, sender id, sender display
        name, gift id, count, coins (count x price), request fingerprint, sender is
        age-verified (1/0), event JSON fragment, idempotency key

  Output:
    one reply a gift, in their order, each send_gift's, laid end to end in one flat
    list: 0, event_id, coins_left, combo, replayed(0/1), diamonds (six values) or
    a code alone (ledger/gift_batch.py `split_replies` splits them; a table a gift cost
    Redis ~5,000 instructions a gift to turn into its reply: docs/performance.md);
    every gift 16 (INVALID_ARGUMENT) when the configuration or the layout is wrong,
    nothing written.
]]
--- @include "numbers"
--- @include "event"
--- @include "spend"
--- @include "combo"
--- @include "earn"
--- @include "battle"
--- @include "gift"

-- KEYS and ARGV as locals: a global is a table lookup at each use, and a gift reads
-- its keys and arguments from them ~35 times (docs/performance.md, "Per call").
local KEYS, ARGV = KEYS, ARGV

local needAdult, shareArg, idemTtl, historyMax = ARGV[1] == '1', ARGV[2], ARGV[6], ARGV[7]
local shareBps, comboWindow = tonumber(shareArg), tonumber(ARGV[3])
local ratePerS, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local together, streams = ARGV[8], tonumber(ARGV[9])
local gifts = streams and (#KEYS - 11 * streams) / 2
local replies = {}
if not (streams and gifts and gifts % 1 == 0 and #ARGV == 9 + 5 * streams + 10 * gifts
    and (together == '1' or together == '0')
    and shareBps and comboWindow and ratePerS and burst and shareBps >= 0 and shareBps <= 10000
    and digits(idemTtl) and idemTtl ~= '0' and digits(historyMax)) then
  for i = 1, (gifts and gifts % 1 == 0 and gifts > 0) and gifts or 1 do replies[i] = 16 end
  return replies
end

-- A stream's clock, once for its gifts: {g, now, held until, UTC day, its text}, by g as
-- a gift names its stream (decimal digits, no sign or leading zero); false when out of
-- range (its gifts refused, nothing of them written). tonumber gives nil for a
-- non-numeric argument; n % 1 is NaN for inf and NaN. A gift finds its stream by its
-- text: no tonumber a gift.
local clocks = {}
for g = 1, streams do
  local sa = 9 + 5 * (g - 1)
  local now, heldUntil = tonumber(ARGV[sa + 4]), tonumber(ARGV[sa + 5])
  clocks[fmt(g)] = (now and heldUntil and now % 1 == 0 and now >= 0
    and now <= 9007199254740991 and heldUntil % 1 == 0 and heldUntil >= 0
    and heldUntil <= 9007199254740991) and {g, now, heldUntil, utcDay(now)} or false
end

local giftKeys, giftArgs = 11 * streams, 9 + 5 * streams
local shared = newShared(together == '1', historyMax)
local r = 0 -- the replies' length
for i = 1, gifts do
  local a, k = giftArgs + 10 * (i - 1), giftKeys + 2 * (i - 1)
  local clock = clocks[ARGV[a + 1]]
  if not clock then
    r = r + 1
    replies[r] = 16
  else
    local g = clock[1]
    local s, sa = 11 * (g - 1), 9 + 5 * (g - 1)
    local ok, reply, eventId, coinsLeft, combo, replayed, diamonds = pcall(giftOne,
      KEYS[k + 1], KEYS[k + 2], KEYS[s + 1], KEYS[s + 2], KEYS[s + 3], KEYS[s + 4],
      KEYS[s + 5], KEYS[s + 6], KEYS[s + 7], KEYS[s + 8], KEYS[s + 9], KEYS[s + 10],
      KEYS[s + 11], ARGV[a + 2], ARGV[a + 3], ARGV[sa + 1], ARGV[a + 4], ARGV[a + 5],
      ARGV[a + 6], ARGV[a + 7], clock[2], ARGV[sa + 4], clock[4], clock[5], ARGV[a + 8] == '1',
      ARGV[a + 9], ARGV[sa + 3], ARGV[a + 10], ARGV[sa + 2], clock[3], ARGV[sa + 5], needAdult,
      shareArg, shareBps, comboWindow, ratePerS, burst, idemTtl, shared)
    if ok and reply == 0 then
      replies[r + 1], replies[r + 2], replies[r + 3] = 0, eventId, coinsLeft
      replies[r + 4], replies[r + 5], replies[r + 6] = combo, replayed, diamonds
      r = r + 6
    else
      r = r + 1
      replies[r] = refusalOf(ok, reply, writeShared, shared)
    end
  end
end
writeShared(shared)
return replies
