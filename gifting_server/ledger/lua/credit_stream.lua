--[[
  credit_stream: the stream's step of a gift across slots, all in the stream's
  slot, once per transfer: advance the combo, bump the stream's board and total,
  append the gift to the history and publish it (SPUBLISH on a cluster). It checks
  no rule: the debit committed the gift (gift_gate read the stream's rules before
  it), so a gift debited just before its stream ended still lands.
  A transfer seen before answers its first result (the record lives as long as an
  idempotency key, far longer than the relay takes to finish a transfer).
  During a live battle of the stream (include "battle") the coins count for the
  stream's side when this step runs before the battle's end by this slot's TIME;
  the battle and that time are answered (and kept in the record, so a repeat
  answers them) for credit_streamer's journal entry.

  Input:
    KEYS[1] stream meta         {s:S}:meta
    KEYS[2] stream leaderboard  {s:S}:lb
    KEYS[3] open streaks        {s:S}:streaks
    KEYS[4] stream history      {s:S}:history
    KEYS[5] transfer record     {s:S}:credited:<transfer id>:<debit nonce>
    KEYS[6] battle top          {s:S}:battle_top
    ARGV[1] sender id     ARGV[2] gift id      ARGV[3] count    ARGV[4] coins
    ARGV[5] the debit's time, unix ms          ARGV[6] combo quiet window, ms
    ARGV[7] history length cap                 ARGV[8] event JSON fragment
    ARGV[9] pub/sub channel                    ARGV[10] record ttl, ms

  Output:
    {0, event_id, combo, replayed(0/1), battle id or '', counted at (unix ms) or ''}
    {16} INVALID_ARGUMENT   {17} CORRUPT_VALUE
  Keys written without being read first are not type-checked (see send_gift):
  reconcile names a wrong-typed one.
]]
--- @include "numbers"
--- @include "event"
--- @include "combo"
--- @include "battle"

local streamKey, streamBoardKey, streaksKey, historyKey, recordKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local battleTopKey = KEYS[6]
local sender, giftId, countArg, costArg, nowArg = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local historyMax, fragment, channel, recordTtl = ARGV[7], ARGV[8], ARGV[9], ARGV[10]

local count, cost, now = int(countArg, 1, MAX), int(costArg, 0, MAX), int(nowArg, 0, MAX)
local comboWindow = int(ARGV[6], 0, MAX)
if not (count and cost and now and comboWindow and digits(costArg) and digits(historyMax)
    and digits(recordTtl) and recordTtl ~= '0' and type(fragment) == 'string'
    and type(channel) == 'string') then
  return {16}
end

local seen = call('GET', recordKey)
if seen then
  local eventId, combo, battleId, at = string.match(seen, '^(%d+)|(%d+)|?([^|]*)|?(%d*)$')
  return {0, tonumber(eventId), tonumber(combo), 1, battleId or '', at or ''}
end

local comboField = 'c:' .. sender .. ':' .. giftId
local meta = call('HMGET', streamKey, 'seq', 'coins', comboField, 'webhook_log', 'battle')
local seq, streamCoins = tonumber(meta[1] or '0'), tonumber(meta[2] or '0')
local lastCombo, lastTap, fragmentAt = parseCombo(meta[3])
if not (seq and streamCoins) or lastCombo == nil then return {17} end
local battle = meta[5] and battleOf(meta[5])

-- The history first: the only write that can fail (see emitEvent), with nothing changed.
local coinsTotal = streamCoins + cost
local eventId, id, combo, comboText, tapText, coinsTotalText = emitGift(historyKey, historyMax,
  channel, streaksKey, comboField, seq, streamCoins, coinsTotal, count, countArg,
  lastCombo, lastTap, meta[3], fragmentAt, now, nowArg, comboWindow, fragment, meta[4])
-- The boards before the meta: written unread, they can fail (a key planted with
-- another type), and the meta written before that failure, without the record, would
-- have the relay count the gift again (its event, coins and points) on every pass.
call('ZINCRBY', streamBoardKey, costArg, sender)
if battle then countBattle(streamKey, battleTopKey, costArg, sender) end
call('HSET', streamKey, 'seq', id, 'coins', coinsTotalText,
  comboField, comboText .. '|' .. tapText .. '|' .. fragment)
if battle then
  call('SET', recordKey, id .. '|' .. comboText .. '|' .. battle[1] .. '|' .. battle[2],
    'PX', recordTtl)
  return {0, eventId, combo, 0, battle[1], battle[2]}
end
call('SET', recordKey, id .. '|' .. comboText, 'PX', recordTtl)
return {0, eventId, combo, 0, '', ''}
