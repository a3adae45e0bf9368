--[[
  event: the one place a stream event is built, appended to the stream's history
  and published. Not a script: `--- @include "event"` in a script is replaced by
  this file when scripts.py loads it. gifting_server/events.py reads what this
  builds (its docstring describes the framing); change the two together.

  An event is one JSON object, the envelope first, then the fields of its kind:
    {"event_id":<id>,"kind":"<kind>","ts":<unix ms>,<fields>}
  and {"event_id":<id>,"kind":"<kind>","ts":<unix ms>} for a kind without fields.
  Every argument is a string: ids, times and counts as decimal digits, fields as
  a JSON fragment without braces.
]]

-- The envelope's parts, around its id, kind and time.
local EVENT_ID, EVENT_KIND, EVENT_TS = '{"event_id":', ',"kind":"', '","ts":'

-- The envelope without its closing brace: `event` adds the fields.
local function eventHead(id, kind, ts)
  return EVENT_ID .. id .. EVENT_KIND .. kind .. EVENT_TS .. ts
end

-- An event of any kind; `fields` is nil for a kind without fields.
local function event(id, kind, ts, fields)
  if fields then return eventHead(id, kind, ts) .. ',' .. fields .. '}' end
  return eventHead(id, kind, ts) .. '}'
end

-- A `gift` event, in one concatenation, the envelope's too (it is on every gift's
-- path: a string built a gift costs it ~1,000 instructions). `fragment` is the sender
-- and gift part the caller was given, "sender":{..},"gift":{..}, (with its trailing
-- comma); `streakEnd` is 'true' or 'false'.
local function giftEvent(id, ts, fragment, count, combo, streakEnd, coinsTotal)
  return EVENT_ID .. id .. EVENT_KIND .. 'gift' .. EVENT_TS .. ts .. ',' .. fragment
    .. '"count":' .. count
    .. ',"combo":' .. combo .. ',"streak_end":' .. streakEnd
    .. ',"coins_total":' .. coinsTotal .. '}'
end

-- The event that closes a streak: one more `gift` with count 0 and the final combo.
local function streakEndEvent(id, ts, fragment, combo, coinsTotal)
  return giftEvent(id, ts, fragment, '0', combo, 'true', coinsTotal)
end

-- Append the event to the history (entry id "<event_id>-0", field "e") and publish
-- it. Entry ids must grow, so only a script's first append can fail (a meta restored
-- behind its history); scripts call this before any other write.
-- `channel` is the stream's channel, {s:<stream>}:events, published with PUBLISH (a
-- single Redis, which may be older than 7), or "sharded:" and the channel on a
-- cluster: SPUBLISH, which keeps the event on the shard of the stream's slot (the
-- channel hashes to it, so the script may publish there). keys.SHARDED is the prefix.
-- `deliveryLog`: the stream meta's field "webhook_log", read by the caller with the
-- rest of the meta. nil (false) when the stream has no webhook endpoints: nothing more
-- is done, so such a stream's events cost what they did before webhooks (make
-- bench-script). Else the name of the stream's delivery log (keys.webhook_log), a
-- Redis Stream the event is appended to as well, same entry id and field, in the same
-- step; the webhook deliverer reads it and trims it (webhooks/deliver.py). The log is
-- not among the script's KEYS: it carries the hash tag of the stream's keys the
-- script was given, so it is in their slot, which is what Redis Cluster checks of a
-- script without flags; declaring it would add an argument to every gift's call.
-- Publish a message on the stream's channel (see emitEvent).
local function publish(channel, message)
  -- A plain channel starts with "{", a marked one with "s", which sorts below it: a
  -- comparison, not a call of string.byte, which costs every gift (make bench-script).
  if channel > "{" then
    call('PUBLISH', channel, message)
  else
    call('SPUBLISH', string.sub(channel, 9), message)
  end
end

-- `outbox`: nil to publish the event now, as one message; or a list the caller
-- publishes later with the other events of its call, one message for them all, the
-- events one a line (`publish(channel, table.concat(outbox, '\n'))`: send_gifts,
-- one PUBLISH a stream a call). An event is JSON without a raw newline, and the
-- brokers split a message at "\n" (events.py `published`), so a message of one event
-- is read as it always was.
-- With an outbox the history is grouped too: the call's first event of the stream is
-- appended now, alone, so that a history ahead of its meta fails it with nothing of it
-- written (as before); the events after it wait in the outbox, and `appendGrouped`
-- appends them at the call's end as one entry, its id the last event's, its field "e"
-- the events one a line (events.py `history_events` reads an entry back as events).
-- One XADD a stream a call instead of one an event (docs/performance.md, "The history
-- grouped"). `outbox.last`: the id of its last event (set once it is in the outbox).
-- `historyMax`: the history's cap, trimmed to (`MAXLEN ~`) with this append; false to
-- append untrimmed, for a caller that trims once after its appends (send_gifts: one
-- trim a stream a call, include "gift" `writeShared`).
local function emitEvent(historyKey, historyMax, channel, id, json, deliveryLog, outbox)
  if outbox and outbox[1] then
    -- a later event of the call: appended with the others at its end
  elseif historyMax then
    call('XADD', historyKey, 'MAXLEN', '~', historyMax, id .. '-0', 'e', json)
  else
    call('XADD', historyKey, id .. '-0', 'e', json)
  end
  if deliveryLog then call('XADD', deliveryLog, id .. '-0', 'e', json) end
  if outbox then
    outbox[#outbox + 1] = json
    outbox.last = id
  else
    publish(channel, json)
  end
end
