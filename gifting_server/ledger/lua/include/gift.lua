--[[
  gift: one gift of a send_gifts call (the gifts of one flush, one after the other
  in one call): the same checks, in the same order, and the same writes as
  send_gift.lua, which a gift alone in its flush takes; change the two together
  (tests/ledger/test_gift_batch.py holds a batch to send_gift's answers). Not a
  script: `--- @include "gift"` is replaced by this file when scripts.py loads a
  script. Needs "numbers", "event", "spend", "combo", "earn", "battle".

  The gift's keys (send_gift's KEYS, in its order) and its own arguments come as
  values, the configuration and the clock of the gift's stream in the call (now, the
  hold's end and the UTC day, validated once by the caller) as numbers and the strings Redis is
  given back. The reply is send_gift's, as values rather than a table: the caller
  lays the replies of its gifts end to end in one flat list (send_gifts' Output).

  What the gifts of one call share is read once and written once, at the call's
  end (`writeShared`): a stream's meta (its owner, status, sequence, coins and the
  combos the call advanced) and a streamer's credit (coins received, diamonds),
  read by the call's first gift that needs them; the platform's share and the
  held diamonds are summed and added once; the gifts to one streamer are one journal
  entry, a line a gift, and the events of one stream one published message, a line
  an event (both written last: a journal planted with another type fails the call
  there, the gifts otherwise written). A gift still sees every gift before it
  in the call: it reads them from `shared`. The history append stays each gift's
  first write: a history ahead of its meta refuses that gift alone, with nothing of
  it written (`refusalOf`: CORRUPT_VALUE), and the call goes on.
  Any other error (a full Redis at the call's first write, a key planted with
  another type) ends the call after `writeShared`, so the gifts before it are whole. send_gift does not share this: a call's tables cost
  Redis's Lua heap (its garbage collector) ~40,000 instructions, which a batch of
  several gifts pays back and a lone gift does not (docs/performance.md, "Batching").
]]

-- `together`: a stream's events of the call published as one message at its end (else
-- each as it is made, one message an event). `historyMax`: the histories' cap, trimmed
-- to once a stream at the call's end (one `XTRIM`, not `MAXLEN` on each gift's `XADD`).
local function newShared(together, historyMax)
  return {together = together, historyMax = historyMax, counts = {}, costs = {}, texts = {},
    streams = {}, streamOrder = {}, streamers = {}, streamerOrder = {}, held = {}, heldOrder = {},
    platform = {}, platformOrder = {}, journals = {}, journalOrder = {}, outboxes = {},
    channelOrder = {}}
end

-- What a number of the call's gifts reads as or writes as, found once a call: the
-- gifts of a call mostly repeat a few counts and prices, and a few diamonds and
-- platform shares, and each tonumber or fmt costs a gift ~1,200 instructions where a
-- table lookup costs ~100 (docs/performance.md). `false`: the text is no number.
local function countOf(counts, text)
  local n = counts[text]
  if n == nil then
    n = tonumber(text) or false
    counts[text] = n
  end
  return n
end

-- A price as Redis must parse it too (`digits`), else false.
local function costOf(costs, text)
  local n = costs[text]
  if n == nil then
    n = digits(text) and tonumber(text)
    costs[text] = n
  end
  return n
end

local function textOf(texts, n)
  local t = texts[n]
  if not t then
    t = fmt(n)
    texts[n] = t
  end
  return t
end

-- The code that answers an item of the call (a gift, a transfer) that `pcall` ran and
-- that was not done: its own code; 17 for an error of its first write, its history
-- XADD, that says the history is ahead of the stream's meta: nothing of the item was
-- written, and the call goes on. Any other error ends the call after `finish(shared)`
-- wrote what the items before it left, whole. The scripts lay a done item's values
-- themselves: a call here a gift would cost ~1,200 instructions.
local function refusalOf(ok, reply, finish, shared)
  if ok then return reply end
  local e = reply
  if type(e) == 'table' then e = e.err end -- Redis 7 raises a table, older Redis a string
  if type(e) == 'string'
      and string.find(e, 'equal or smaller than the target stream top', 1, true) then
    return 17
  end
  finish(shared) -- the items before this one, whole; then the call's error
  error(reply)
end

-- The history's events of a call after the stream's first (include "event",
-- emitEvent), as one entry, trimmed with it to the cap by event id: `MINID` the last
-- event's id less the cap, so that the cap still counts events, not entries. Exactly,
-- not `~`: Redis trims `~` by whole nodes of stream-node-max-entries entries, which
-- entries of many events would make many times the cap. `outbox.history`: the stream's
-- history.
local function appendGrouped(outbox, historyMax)
  local oldest = tonumber(outbox.last) - tonumber(historyMax) + 1
  call('XADD', outbox.history, 'MINID', fmt(oldest > 0 and oldest or 0),
    outbox.last .. '-0', 'e', table.concat(outbox, '\n', 2))
end

-- The writes the call's gifts left in `shared`, once each.
local function writeShared(shared)
  for _, key in ipairs(shared.streamOrder) do
    local st = shared.streams[key]
    -- A stream's grouped events first, with its meta: the writes after these (a held
    -- bucket, the platform's account, a journal) can fail on a key planted with another
    -- type, and the history must still hold every event its meta's seq counts, as it
    -- did when each event was its own XADD. Trimmed with that entry.
    local grouped = st.outbox and st.outbox[2]
    if grouped then appendGrouped(st.outbox, shared.historyMax) end
    if st.seqText then
      local fields = {'seq', st.seqText, 'coins', st.coinsText}
      for _, field in ipairs(st.fields) do
        fields[#fields + 1] = field
        fields[#fields + 1] = st.combos[field]
      end
      call('HSET', key, unpack(fields))
      if not grouped then call('XTRIM', st.historyKey, 'MAXLEN', '~', shared.historyMax) end
    end
  end
  for _, key in ipairs(shared.streamerOrder) do
    local sr = shared.streamers[key]
    if sr.changed then
      call('HSET', key, 'received', fmt(sr.received), 'diamonds', fmt(sr.diamonds))
    end
  end
  -- A held bucket the call starts (an hour's first) drops the buckets released by
  -- the time of the gift that started it, as that gift alone would have.
  for _, bucket in ipairs(shared.heldOrder) do
    local heldKey, field, now, diamonds = bucket[1], bucket[2], bucket[3], bucket[4]
    if call('HINCRBY', heldKey, field, fmt(diamonds)) == diamonds then
      local released = {}
      for _, at in ipairs(call('HKEYS', heldKey)) do
        local t = tonumber(at)
        if t and t <= now and at ~= field then released[#released + 1] = at end
      end
      if #released > 0 then call('HDEL', heldKey, unpack(released)) end
    end
  end
  for _, key in ipairs(shared.platformOrder) do
    call('HINCRBY', key, 'coins', fmt(shared.platform[key]))
  end
  -- A channel's events of the call in one message, one a line (include "event"): one
  -- PUBLISH a stream a call, not one an event. A channel whose gifts were all refused
  -- by a history ahead of its meta (its outbox made before the XADD failed) has none:
  -- no message, not an empty one (a subscriber reads each line as an event).
  for _, channel in ipairs(shared.channelOrder) do
    local outbox = shared.outboxes[channel]
    if #outbox > 0 then publish(channel, table.concat(outbox, '\n')) end
  end
  -- A journal's gifts of the call in one entry (include "earn", `journalGift`): one XADD
  -- a call, not one a gift.
  for _, key in ipairs(shared.journalOrder) do
    local journal = shared.journals[key]
    if journal.counted then
      call('XADD', key, '*', 'g', table.concat(journal.gifts, '\n'),
        'b', table.concat(journal.battles, '\n'))
    else
      call('XADD', key, '*', 'g', table.concat(journal.gifts, '\n'))
    end
  end
end

-- A gift's held diamonds and platform share, added to the call's sums, which
-- `writeShared` writes once: a streamer's buckets by release time (no key string built
-- a gift) and the platform accounts, each in the order the call first met it.
local function addEarnings(shared, heldKey, platformKey, heldUntil, heldUntilArg, now, diamonds,
    platformShare)
  if diamonds > 0 and heldUntil > 0 then
    local buckets = shared.held[heldKey]
    if not buckets then
      buckets = {}
      shared.held[heldKey] = buckets
    end
    local bucket = buckets[heldUntilArg]
    if bucket then
      bucket[4] = bucket[4] + diamonds
    else
      bucket = {heldKey, heldUntilArg, now, diamonds}
      buckets[heldUntilArg] = bucket
      shared.heldOrder[#shared.heldOrder + 1] = bucket
    end
  end
  if platformShare > 0 then
    local owed = shared.platform[platformKey]
    if not owed then shared.platformOrder[#shared.platformOrder + 1] = platformKey end
    shared.platform[platformKey] = (owed or 0) + platformShare
  end
end

local function giftOne(idemKey, walletKey, streamKey, streamerKey, heldKey, platformKey,
    streamBoardKey, dayBoardKey, allBoardKey, streaksKey, journalKey, historyKey,
    battleTopKey, sender, senderName, expectedStreamer, giftId, countArg, costArg,
    fingerprint, now, nowArg, day, dayText, isAdult, eventFragment, channel, idemName, streamId,
    heldUntil, heldUntilArg, needAdult, shareArg, shareBps, comboWindow, ratePerS, burst,
    idemTtl, shared)

  -- 0. This gift's own numbers (the configuration's and the stream's clock were checked
  -- by the caller). tonumber gives nil for a missing or non-numeric argument.
  local count, cost = countOf(shared.counts, countArg), costOf(shared.costs, costArg)
  if not (count and cost) then return 16 end

  -- 1. Idempotency: the same key answers the first result again.
  local seen = call('GET', idemKey)
  if seen then
    local fp, eventId, coinsLeft, combo = string.match(seen, '^(.*)|(%d+)|(%d+)|(%d+)$')
    if fp ~= fingerprint then return 1 end
    return 0, tonumber(eventId), tonumber(coinsLeft), tonumber(combo), 1, 0
  end

  -- 2. The stream, and the sender's combo of this gift on it: read by the call's first
  -- gift to the stream, then from `shared`. A stored number that does not parse (nil)
  -- is refused here, not left to fail after the first write.
  local comboField = 'c:' .. sender .. ':' .. giftId
  local st, comboRaw = shared.streams[streamKey], nil
  if st then
    comboRaw = st.combos[comboField]
    if comboRaw == nil then comboRaw = call('HGET', streamKey, comboField) end
  else
    local meta = call('HMGET', streamKey, 'streamer', 'status', 'seq', 'coins', comboField,
      'webhook_log', 'battle')
    st = {owner = meta[1], status = meta[2], seq = tonumber(meta[3] or '0'),
      coins = tonumber(meta[4] or '0'), combos = {}, fields = {}, deliveryLog = meta[6],
      battle = meta[7], historyKey = historyKey}
    shared.streams[streamKey] = st
    shared.streamOrder[#shared.streamOrder + 1] = streamKey
    comboRaw = meta[5]
  end
  if not st.owner or st.owner ~= expectedStreamer then return 2 end
  if st.status ~= 'live' then return 3 end
  if st.owner == sender then return 4 end
  if needAdult and not isAdult then return 5 end
  local lastCombo, lastTap, fragmentAt = parseCombo(comboRaw)
  if not (st.seq and st.coins) or lastCombo == nil then return 17 end

  -- 3. The sender's wallet: rate limit, balance, own daily budget.
  local w = call('HMGET', walletKey, 'coins', 'limit', 'spent', 'spent_day',
    'rl_at', 'rl_tokens')
  local coinsLeft, spent, refilledAt, tokens, budgetDays, spentDay, spentBefore =
    checkSpend(walletKey, w, now, nowArg, day, dayText, cost, ratePerS, burst)
  if not coinsLeft then return spent end

  -- 4. The streamer's side: diamonds and the platform's share, from the lifetime coins
  -- received (read by the call's first gift to the streamer, then from `shared`).
  local sr = shared.streamers[streamerKey]
  if not sr then
    local s = call('HMGET', streamerKey, 'received', 'diamonds')
    sr = {received = tonumber(s[1] or '0'), diamonds = tonumber(s[2] or '0')}
    shared.streamers[streamerKey] = sr
    shared.streamerOrder[#shared.streamerOrder + 1] = streamerKey
  end
  if not (sr.received and sr.diamonds) then return 17 end
  local diamonds = creatorShare(sr.received + cost, shareBps) - creatorShare(sr.received, shareBps)
  local platformShare = cost - diamonds

  -- 5. The stream's battle, when it is in one (reads only; include "battle").
  local battle = st.battle and battleOf(st.battle)

  -- All checks passed: write. The history comes first: its entry ids must grow, so a
  -- stream meta restored behind its history makes that XADD fail; as this gift's
  -- first write it fails with nothing of the gift written (`refusalOf`). No later
  -- call can fail on anything a client sends (a key planted with another type or
  -- value can: see send_gift's header).
  local coinsTotal = st.coins + cost
  local outbox = shared.together and shared.outboxes[channel]
  if shared.together and not outbox then
    outbox = {}
    shared.outboxes[channel] = outbox
    shared.channelOrder[#shared.channelOrder + 1] = channel
    outbox.history, st.outbox = historyKey, outbox
  end
  local eventId, id, combo, comboText, tapText, coinsTotalText = emitGift(historyKey,
    false, channel, streaksKey, comboField, st.seq, st.coins, coinsTotal,
    count, countArg, lastCombo, lastTap, comboRaw, fragmentAt, now, nowArg, comboWindow,
    eventFragment, st.deliveryLog, outbox)
  st.seq, st.coins, st.seqText, st.coinsText = eventId, coinsTotal, id, coinsTotalText
  if st.combos[comboField] == nil then st.fields[#st.fields + 1] = comboField end
  -- The combo outlives its window so that close_streaks can still announce its end.
  st.combos[comboField] = comboText .. '|' .. tapText .. '|' .. eventFragment

  sr.received, sr.diamonds, sr.changed = sr.received + cost, sr.diamonds + diamonds, true
  addEarnings(shared, heldKey, platformKey, heldUntil, heldUntilArg, now, diamonds,
    platformShare)
  local coinsLeftText = writeSpend(walletKey, senderName, coinsLeft, spent, refilledAt,
    tokens, budgetDays, spentDay, spentBefore)

  call('ZINCRBY', streamBoardKey, costArg, sender)
  bumpChannelBoards(dayBoardKey, allBoardKey, costArg, cost, sender)
  local journal = shared.journals[journalKey]
  if not journal then
    journal = {gifts = {}, battles = {}, counted = false}
    shared.journals[journalKey] = journal
    shared.journalOrder[#shared.journalOrder + 1] = journalKey
  end
  local n = #journal.gifts + 1
  local texts = shared.texts
  journal.gifts[n] = giftEntry(sender, st.owner, streamId, giftId, countArg, costArg,
    textOf(texts, diamonds), textOf(texts, platformShare), shareArg, id, idemName, nowArg,
    w[2], isAdult)
  journal.battles[n] = battle and (battle[1] .. '|' .. battle[2]) or ''
  if battle then journal.counted = true end
  if battle then countBattle(streamKey, battleTopKey, costArg, sender) end
  call('PSETEX', idemKey, idemTtl,
    fingerprint .. '|' .. id .. '|' .. coinsLeftText .. '|' .. comboText)
  return 0, eventId, coinsLeft, combo, 0, diamonds
end
