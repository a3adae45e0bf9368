--[[
  gift: one gift on one Redis, its checks and then its writes; shared by send_gift
  (one gift a call) and send_gifts (the gifts of one flush, one after the other in
  one call). Not a script: `--- @include "gift"` is replaced by this file when
  scripts.py loads a script. Needs "numbers", "event", "spend", "combo", "earn".

  The gift's keys (send_gift's KEYS, in its order) and its own arguments come as
  values, the configuration (validated once by the caller) as numbers and the
  strings Redis is given back. The reply is send_gift's.
]]

local function giftOne(idemKey, walletKey, streamKey, streamerKey, heldKey, platformKey,
    streamBoardKey, dayBoardKey, allBoardKey, streaksKey, journalKey, historyKey,
    sender, senderName, expectedStreamer, giftId, countArg, costArg,
    fingerprint, nowArg, isAdult, eventFragment, channel, idemName, streamId, heldUntilArg,
    needAdult, shareArg, shareBps, comboWindow, ratePerS, burst, idemTtl, historyMax)

  -- 0. This gift's own numbers (the configuration's were checked by the caller).
  -- tonumber gives nil for a missing or non-numeric argument; n % 1 is NaN for inf and NaN.
  local count, cost, now = tonumber(countArg), tonumber(costArg), tonumber(nowArg)
  local heldUntil = tonumber(heldUntilArg)
  if not (count and cost and now and heldUntil and digits(costArg)
      and now % 1 == 0 and now >= 0 and now <= 9007199254740991
      and heldUntil % 1 == 0 and heldUntil >= 0 and heldUntil <= 9007199254740991) then
    return {16}
  end

  -- 1. Idempotency: the same key answers the first result again.
  local seen = redis.call('GET', idemKey)
  if seen then
    local fp, eventId, coinsLeft, combo = string.match(seen, '^(.*)|(%d+)|(%d+)|(%d+)$')
    if fp ~= fingerprint then return {1} end
    return {0, tonumber(eventId), tonumber(coinsLeft), tonumber(combo), 1, 0}
  end

  -- 2. The stream, and the sender's combo of this gift on it. A stored number that
  -- does not parse (nil) is refused here, not left to fail after the first write.
  local comboField = 'c:' .. sender .. ':' .. giftId
  local meta = redis.call('HMGET', streamKey, 'streamer', 'status', 'seq', 'coins', comboField)
  if not meta[1] or meta[1] ~= expectedStreamer then return {2} end
  if meta[2] ~= 'live' then return {3} end
  if meta[1] == sender then return {4} end
  if needAdult and not isAdult then return {5} end
  local seq, streamCoins = tonumber(meta[3] or '0'), tonumber(meta[4] or '0')
  local last = parseCombo(meta[5])
  if not (seq and streamCoins) or last == nil then return {17} end

  -- 3. The sender's wallet: rate limit, balance, own daily budget.
  local w = redis.call('HMGET', walletKey, 'coins', 'limit', 'spent', 'spent_day',
    'rl_at', 'rl_tokens', 'spent_before')
  local coinsLeft, spent, refilledAt, tokens, budgetDays, spentDay, spentBefore =
    checkSpend(w, now, cost, ratePerS, burst)
  if not coinsLeft then return {spent} end

  -- 4. The streamer's side: diamonds, the hold, the platform's share.
  local diamonds, platformShare, received, totalDiamonds = checkEarn(streamerKey, cost, shareBps)
  if not diamonds then return {platformShare} end

  -- All checks passed: write. The history comes first: its entry ids must grow, so
  -- a stream meta restored behind its history makes that XADD fail; as the first
  -- write, it fails with nothing changed. No later call can fail on anything a client
  -- sends (a key planted with another type or value can: see send_gift's header).
  local coinsTotal = streamCoins + cost
  local eventId, id, combo, comboText, tapText, coinsTotalText = emitGift(historyKey,
    historyMax, channel, streaksKey, sender .. ':' .. giftId, seq, streamCoins, coinsTotal,
    count, countArg, last, now, nowArg, comboWindow, eventFragment)

  writeEarn(streamerKey, heldKey, platformKey, heldUntil, heldUntilArg, now, diamonds,
    platformShare, received, totalDiamonds)
  local coinsLeftText = writeSpend(walletKey, senderName, coinsLeft, spent, refilledAt,
    tokens, budgetDays, spentDay, spentBefore)

  redis.call('ZINCRBY', streamBoardKey, costArg, sender)
  bumpChannelBoards(dayBoardKey, allBoardKey, costArg, cost, sender)
  journalGift(journalKey, sender, meta[1], streamId, giftId, countArg, costArg, diamonds,
    platformShare, shareArg, id, idemName, nowArg, w[2], isAdult)

  -- The combo outlives its window so that close_streaks can still announce its end.
  redis.call('HSET', streamKey, 'seq', id, 'coins', coinsTotalText,
    comboField, comboText .. '|' .. tapText .. '|' .. eventFragment)
  redis.call('SET', idemKey, fingerprint .. '|' .. id .. '|' .. coinsLeftText .. '|' .. comboText,
    'PX', idemTtl)
  return {0, eventId, coinsLeft, combo, 0, diamonds}
end
