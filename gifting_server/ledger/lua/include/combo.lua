--[[
  combo: the stream's side of a gift, shared by send_gift (one Redis) and
  credit_stream (a step of a gift across slots). Not a script: `--- @include
  "combo"` is replaced by this file when scripts.py loads a script. Needs
  "numbers" and "event".

  The combo of (sender, gift) lives in a field of the stream meta,
  "c:<sender>:<gift>" = "<combo>|<last tap ms>|<event fragment>", so reading and
  advancing it costs no call of its own; the open-streaks set is only touched
  when a streak starts (close_streaks pushes the deadline of a streak that went on).
]]

-- The stored combo field: its combo, its last tap and where its fragment starts in
-- `raw`; false when absent; nil when it does not parse (CORRUPT_VALUE for the caller).
-- The fragment is not captured: it is wanted only when a streak ends, and matching it
-- walks its every character (~3,500 instructions a gift: docs/performance.md).
local function parseCombo(raw)
  if not raw then return false end
  local n, at, fragmentAt = string.match(raw, '^(%d+)|(%d+)|()')
  local combo, tap = tonumber(n), tonumber(at)
  if not (combo and tap) then return nil end
  return combo, tap, fragmentAt
end

-- Emit the gift on the stream, the stream's first write (see emitEvent): first the
-- end of the sender's previous streak of this gift when its quiet window passed but
-- no sweep has closed it yet, then the gift. A new streak joins the open-streaks
-- set as "<sender>:<gift>", cut from the combo's field "c:<sender>:<gift>" only then
-- (`comboField`: a string built a gift costs it ~1,000 instructions). `lastCombo`,
-- `lastTap`, `fragmentAt`: what parseCombo gave for the stored field `lastRaw`
-- (`lastCombo` false when there was none). Returns the
-- gift's event id, its text, the combo and its text, the streak's last tap to store
-- and the stream's new coin total as text. A gift that reaches the stream after a
-- later one (a transfer finished late, a worker's clock behind) joins the streak but
-- never moves its last tap back, which would end the streak before its window passed.
-- `deliveryLog`, `outbox`: see emitEvent.
local function emitGift(historyKey, historyMax, channel, streaksKey, comboField, seq,
    streamCoins, coinsTotal, count, countArg, lastCombo, lastTap, lastRaw, fragmentAt, now,
    nowArg, comboWindow, fragment, deliveryLog, outbox)
  local eventId = seq + 1
  local combo, tapText = count, nowArg
  if lastCombo then
    if now - lastTap <= comboWindow then
      combo = lastCombo + count
      if lastTap > now then tapText = fmt(lastTap) end
    else
      local endId = fmt(eventId)
      emitEvent(historyKey, historyMax, channel, endId,
        streakEndEvent(endId, nowArg, string.sub(lastRaw, fragmentAt), fmt(lastCombo),
          fmt(streamCoins)), deliveryLog, outbox)
      eventId = eventId + 1
    end
  end
  local id, comboText, coinsTotalText = fmt(eventId), fmt(combo), fmt(coinsTotal)
  emitEvent(historyKey, historyMax, channel, id,
    giftEvent(id, nowArg, fragment, countArg, comboText, 'false', coinsTotalText), deliveryLog,
    outbox)
  if combo == count then
    call('ZADD', streaksKey, fmt(now + comboWindow), string.sub(comboField, 3))
  end
  return eventId, id, combo, comboText, tapText, coinsTotalText
end
