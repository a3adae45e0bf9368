--[[
  earn: the streamer's side of a gift, shared by send_gift (one Redis) and
  credit_streamer (a step of a gift across slots). Not a script: `--- @include
  "earn"` is replaced by this file when scripts.py loads a script. Needs "numbers".

  The lifetime coins received decide the diamonds, so no fraction is lost to
  rounding; they are held until `heldUntil`, a release time the caller rounds up to
  a whole hour (0: not held): one bucket per release hour in the held hash, whose
  released buckets are dropped when a new one starts.
]]

-- floor(n * shareBps / 10000) without the product, which passes 2^53 (and rounds)
-- once a streamer received ~10^12 coins: n = hi * 10000 + lo, hi * shareBps <= n.
-- Exact whatever lo Lua's % gives (it may be off by 10000 near 2^53).
local function creatorShare(n, shareBps)
  local lo = n % 10000
  return (n - lo) / 10000 * shareBps + math.floor(lo * shareBps / 10000)
end

-- What crediting `cost` coins does to the streamer: the diamonds earned, the
-- platform's share and the streamer's new totals, as values to pass to `writeEarn`;
-- or false and 17 (CORRUPT_VALUE) when a stored number does not parse. Writes nothing.
-- The platform account and the held bucket are not read: HINCRBY adds to them, and
-- only someone with Redis access can store a value it refuses (reconcile names a
-- platform account that is no integer; a cashout refuses a held bucket that is none).
local function checkEarn(streamerKey, cost, shareBps)
  local s = call('HMGET', streamerKey, 'received', 'diamonds')
  local received, streamerDiamonds = tonumber(s[1] or '0'), tonumber(s[2] or '0')
  if not (received and streamerDiamonds) then return false, 17 end
  local diamonds = creatorShare(received + cost, shareBps) - creatorShare(received, shareBps)
  return diamonds, cost - diamonds, received + cost, streamerDiamonds + diamonds
end

-- Write what `checkEarn` returned. A held bucket the gift starts (an hour's first)
-- drops the buckets released by `now`, at most once an hour. The streamer's credit
-- last: the held bucket and the platform account are written unread and can fail (a
-- key planted with another type), and diamonds written before that failure would be
-- paid again by a retried step (credit_streamer's relay tries it each pass).
local function writeEarn(streamerKey, heldKey, platformKey, heldUntil, heldUntilArg, now,
    diamonds, platformShare, received, total)
  if diamonds > 0 and heldUntil > 0 then
    if call('HINCRBY', heldKey, heldUntilArg, fmt(diamonds)) == diamonds then
      local released = {}
      for _, field in ipairs(call('HKEYS', heldKey)) do
        local at = tonumber(field)
        if at and at <= now and field ~= heldUntilArg then released[#released + 1] = field end
      end
      if #released > 0 then call('HDEL', heldKey, unpack(released)) end
    end
  end
  if platformShare > 0 then call('HINCRBY', platformKey, 'coins', fmt(platformShare)) end
  call('HSET', streamerKey, 'received', fmt(received), 'diamonds', fmt(total))
end

-- A day board lives past the end of its week (a week is the sum of its day boards).
local DAY_BOARD_TTL_MS = 9 * 86400000

-- The streamer's day and all-time boards of top gifters.
local function bumpChannelBoards(dayBoardKey, allBoardKey, costArg, cost, sender)
  if tonumber(call('ZINCRBY', dayBoardKey, costArg, sender)) == cost then
    call('PEXPIRE', dayBoardKey, DAY_BOARD_TTL_MS)
  end
  call('ZINCRBY', allBoardKey, costArg, sender)
end

-- The gift's journal entry, in the streamer's journal: one field `g`, its values in
-- the order ledger/journal.py reads them (GIFT_FIELDS), "|" between them (no id, key
-- or number holds one). `limit` is the sender's own daily limit when one is set
-- (false otherwise), for the risk report, as is `unverified` for a sender without
-- age verification. One field, not fourteen: ~13,000 instructions less per gift.
-- A gift counted in a battle (`battle`: {battle id, Redis TIME in unix ms}, else
-- false) has a second field `b`, "<battle id>|<time>": the audit of its points.
-- send_gifts journals the gifts of a call to one streamer in one entry (include
-- "gift"): `g` holds their `giftEntry`s one a line ("\n" between them), `b`, when one
-- of them counted in a battle, their battle values one a line, empty for the others.
-- `diamondsText`, `platformText`: the diamonds and the platform's share as fmt writes them.
local function giftEntry(sender, streamer, streamId, giftId, countArg, costArg, diamondsText,
    platformText, shareArg, eventId, idemName, nowArg, limit, isAdult)
  return sender .. '|' .. streamer .. '|' .. streamId
    .. '|' .. giftId .. '|' .. countArg .. '|' .. costArg .. '|' .. diamondsText
    .. '|' .. platformText .. '|' .. shareArg .. '|' .. eventId .. '|' .. nowArg
    .. '|' .. (limit or '') .. '|' .. (isAdult and '' or '1') .. '|' .. idemName
end

local function journalGift(journalKey, sender, streamer, streamId, giftId, countArg, costArg,
    diamonds, platformShare, shareArg, eventId, idemName, nowArg, limit, isAdult, battle)
  local packed = giftEntry(sender, streamer, streamId, giftId, countArg, costArg, fmt(diamonds),
    fmt(platformShare), shareArg, eventId, idemName, nowArg, limit, isAdult)
  if battle then
    call('XADD', journalKey, '*', 'g', packed, 'b', battle[1] .. '|' .. battle[2])
  else
    call('XADD', journalKey, '*', 'g', packed)
  end
end
