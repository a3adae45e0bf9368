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
-- platform's share and the rest of the new state, as values to pass to `writeEarn`;
-- or false and 17 (CORRUPT_VALUE) when a stored number does not parse. Writes nothing.
local function checkEarn(streamerKey, heldKey, platformKey, cost, shareBps, heldUntil, heldUntilArg, now)
  local s = redis.call('HMGET', streamerKey, 'received', 'diamonds')
  local received, streamerDiamonds = tonumber(s[1] or '0'), tonumber(s[2] or '0')
  if not (received and streamerDiamonds) then return false, 17 end
  local diamonds = creatorShare(received + cost, shareBps) - creatorShare(received, shareBps)
  local platformShare = cost - diamonds
  local held, released = 0, {}
  if diamonds > 0 and heldUntil > 0 then
    held = tonumber(redis.call('HGET', heldKey, heldUntilArg) or '0')
    if not held then return false, 17 end
    if held == 0 then
      -- A new hour's bucket: drop the buckets released by now, at most once an hour.
      for _, field in ipairs(redis.call('HKEYS', heldKey)) do
        local at = tonumber(field)
        if not at then return false, 17 end
        if at <= now then released[#released + 1] = field end
      end
    end
  end
  if platformShare > 0 then
    local platform = redis.call('HGET', platformKey, 'coins')
    if platform and not digits(platform) then return false, 17 end
  end
  return diamonds, platformShare, received + cost, streamerDiamonds + diamonds, held, released
end

-- Write what `checkEarn` returned.
local function writeEarn(streamerKey, heldKey, platformKey, heldUntil, heldUntilArg,
    diamonds, platformShare, received, total, held, released)
  redis.call('HSET', streamerKey, 'received', fmt(received), 'diamonds', fmt(total))
  if diamonds > 0 and heldUntil > 0 then
    redis.call('HSET', heldKey, heldUntilArg, fmt(held + diamonds))
    if #released > 0 then redis.call('HDEL', heldKey, unpack(released)) end
  end
  if platformShare > 0 then redis.call('HINCRBY', platformKey, 'coins', platformShare) end
end

-- The streamer's day and all-time boards of top gifters.
local function bumpChannelBoards(dayBoardKey, allBoardKey, costArg, cost, sender)
  if tonumber(redis.call('ZINCRBY', dayBoardKey, costArg, sender)) == cost then
    redis.call('PEXPIRE', dayBoardKey, 9 * 86400000)  -- past the end of its week
  end
  redis.call('ZINCRBY', allBoardKey, costArg, sender)
end

-- The gift's journal entry, in the streamer's journal. `limit` is the sender's own
-- daily limit when one is set (false otherwise), for the risk report, as is
-- `unverified` for a sender without age verification.
local function journalGift(journalKey, sender, streamer, streamId, giftId, countArg, costArg,
    diamonds, platformShare, shareArg, eventId, idemName, nowArg, limit, isAdult)
  local entry = {'type', 'gift', 'user', sender, 'to', streamer,
    'stream', streamId, 'gift', giftId, 'count', countArg, 'coins', costArg,
    'diamonds', diamonds, 'platform', platformShare, 'share', shareArg, 'event_id', eventId,
    'key', idemName, 'at', nowArg}
  if limit then
    entry[#entry + 1] = 'limit'
    entry[#entry + 1] = limit
  end
  if not isAdult then
    entry[#entry + 1] = 'unverified'
    entry[#entry + 1] = '1'
  end
  redis.call('XADD', journalKey, '*', unpack(entry))
end
