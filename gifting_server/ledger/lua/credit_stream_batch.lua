--[[
  credit_stream_batch: credit_stream for the transfers of one flush to one stream,
  in one call, one after the other (ledger/transfer_batch.py): each exactly as
  credit_stream runs it (its checks first, then its writes; a transfer seen before
  answers its first result), so a transfer refused writes nothing and the others go
  on, and a transfer sees what the ones before it wrote (the same transfer twice:
  the second answers the first's record). As in send_gifts (include "gift"), the
  stream's meta is read once (with every transfer's combo: one HMGET) and
  written once at the call's end (`writeShared`),
  its history trimmed once and its events published as one message; each
  transfer's record is written with its own writes, so a call that fails part way
  leaves every transfer either credited (its record answers a repeat) or not at
  all. The relay finishes those with credit_stream (docs/scaling.md, "A gift
  across slots").

  Input (N transfers):
    KEYS[1] stream meta         {s:S}:meta
    KEYS[2] stream leaderboard  {s:S}:lb
    KEYS[3] open streaks        {s:S}:streaks
    KEYS[4] stream history      {s:S}:history
    KEYS[5] battle top          {s:S}:battle_top
    KEYS[5 + i] transfer i's record  {s:S}:credited:<transfer id>:<debit nonce>
    ARGV[1] combo quiet window, ms             ARGV[2] history length cap
    ARGV[3] pub/sub channel                    ARGV[4] record ttl, ms
    ARGV[5] 1: the call's events published as one message, one event a line; 0: one
            message an event
    ARGV[5 + 6(i-1) + 1 .. 6i]  transfer i: sender id, gift id, count, coins, the
            debit's time (unix ms), event JSON fragment

  Output:
    one reply a transfer, in their order, laid end to end in one flat list: 0,
    event_id, combo, replayed(0/1), battle id or '', counted at (unix ms) or '' (six
    values; credit_stream's) or a code alone: 16 INVALID_ARGUMENT, 17 CORRUPT_VALUE;
    every transfer 16 when the configuration or the layout is wrong, nothing written.
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

local streamKey, boardKey, streaksKey, historyKey, battleTopKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local historyMax, channel, recordTtl, together = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local comboWindow = int(ARGV[1], 0, MAX)
local n = #KEYS - 5
local replies = {}
if not (n >= 1 and #ARGV == 5 + 6 * n and comboWindow and digits(historyMax)
    and digits(recordTtl) and recordTtl ~= '0' and type(channel) == 'string'
    and (together == '1' or together == '0')) then
  for i = 1, n >= 1 and n or 1 do replies[i] = 16 end
  return replies
end

local shared = newShared(together == '1', historyMax)
local st = false -- the stream: read by the first transfer not credited before
-- Every transfer's record, read with one MGET (one slot); `written`: the records this
-- call wrote, so that a transfer twice in the call answers the first's result.
local prior, written = call('MGET', unpack(KEYS, 6, 5 + n)), {}
-- A count or a price checked once a call a text (the transfers of a call mostly
-- repeat a few): `false` when it is no number in range.
local counts, costs = {}, {}

local function creditOne(i, recordKey, sender, giftId, countArg, costArg, nowArg, fragment)
  local count, cost = counts[countArg], costs[costArg]
  if count == nil then
    count = int(countArg, 1, MAX) or false
    counts[countArg] = count
  end
  if cost == nil then
    cost = digits(costArg) and int(costArg, 0, MAX) or false
    costs[costArg] = cost
  end
  local now = int(nowArg, 0, MAX)
  if not (count and cost and now and type(fragment) == 'string') then return 16 end

  local seen = written[recordKey] or prior[i]
  if seen then
    local eventId, combo, battleId, at = string.match(seen, '^(%d+)|(%d+)|?([^|]*)|?(%d*)$')
    return 0, tonumber(eventId), tonumber(combo), 1, battleId or '', at or ''
  end

  local comboField = 'c:' .. sender .. ':' .. giftId
  if not st then
    -- The meta with the combo of every transfer of the call, in one HMGET.
    local fields, at = {'seq', 'coins', 'webhook_log', 'battle'}, {}
    for j = 1, n do
      local a = 5 + 6 * (j - 1)
      local field = 'c:' .. ARGV[a + 1] .. ':' .. ARGV[a + 2]
      if not at[field] then
        fields[#fields + 1] = field
        at[field] = #fields
      end
    end
    local meta = call('HMGET', streamKey, unpack(fields))
    st = {seq = tonumber(meta[1] or '0'), coins = tonumber(meta[2] or '0'), combos = {},
      fields = {}, deliveryLog = meta[3], battle = meta[4], historyKey = historyKey,
      stored = {}}
    for field, k in pairs(at) do st.stored[field] = meta[k] end
    shared.streams[streamKey] = st
    shared.streamOrder[1] = streamKey
  end
  local comboRaw = st.combos[comboField]
  if comboRaw == nil then comboRaw = st.stored[comboField] end
  local lastCombo, lastTap, fragmentAt = parseCombo(comboRaw)
  if not (st.seq and st.coins) or lastCombo == nil then return 17 end
  local battle = st.battle and battleOf(st.battle)

  -- The history first: the only write that can fail (a history ahead of its meta:
  -- `refusalOf`), with nothing of this transfer written.
  local coinsTotal = st.coins + cost
  local outbox = shared.together and shared.outboxes[channel]
  if shared.together and not outbox then
    outbox = {}
    shared.outboxes[channel] = outbox
    shared.channelOrder[1] = channel
    outbox.history, st.outbox = historyKey, outbox
  end
  local eventId, id, combo, comboText, tapText, coinsTotalText = emitGift(historyKey, false,
    channel, streaksKey, comboField, st.seq, st.coins, coinsTotal, count, countArg,
    lastCombo, lastTap, comboRaw, fragmentAt, now, nowArg, comboWindow, fragment,
    st.deliveryLog, outbox)
  -- The boards next: written unread, they can still fail (a key planted with another
  -- type); `st` only then, which the call writes before its error: this transfer's
  -- coins and sequence written without its record would be counted again by the relay.
  call('ZINCRBY', boardKey, costArg, sender)
  if battle then countBattle(streamKey, battleTopKey, costArg, sender) end
  st.seq, st.coins, st.seqText, st.coinsText = eventId, coinsTotal, id, coinsTotalText
  if st.combos[comboField] == nil then st.fields[#st.fields + 1] = comboField end
  st.combos[comboField] = comboText .. '|' .. tapText .. '|' .. fragment
  if battle then
    local record = id .. '|' .. comboText .. '|' .. battle[1] .. '|' .. battle[2]
    call('SET', recordKey, record, 'PX', recordTtl)
    written[recordKey] = record
    return 0, eventId, combo, 0, battle[1], battle[2]
  end
  local record = id .. '|' .. comboText
  call('SET', recordKey, record, 'PX', recordTtl)
  written[recordKey] = record
  return 0, eventId, combo, 0, '', ''
end

local r = 0 -- the replies' length
for i = 1, n do
  local a = 5 + 6 * (i - 1)
  local ok, reply, eventId, combo, replayed, battleId, at = pcall(creditOne, i, KEYS[5 + i],
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
  if ok and reply == 0 then
    replies[r + 1], replies[r + 2], replies[r + 3] = 0, eventId, combo
    replies[r + 4], replies[r + 5], replies[r + 6] = replayed, battleId, at
    r = r + 6
  else
    r = r + 1
    replies[r] = refusalOf(ok, reply, writeShared, shared)
  end
end
writeShared(shared)
return replies
