--[[
  spend: the sender's side of a gift, shared by send_gift (one Redis) and debit_gift
  (the first step of a gift across slots). Not a script: `--- @include "spend"`
  is replaced by this file when scripts.py loads a script. Needs "numbers".

  The wallet's fields, as `checkSpend` takes them from
    HMGET wallet coins limit spent spent_day rl_at rl_tokens
  The budget keeps the coins spent on `spent_day` and on the day before
  (`spent_before`): a gift that reaches Redis after one of the next UTC day (clocks
  differ by milliseconds across workers) counts on its own day and never resets the
  newer one. Only such a late gift reads `spent_before` (its own HGET, still before
  any write): every other gift's HMGET is a field shorter (docs/performance.md).
]]

-- The UTC day of `now` (unix ms) and its text, for `checkSpend`.
local function utcDay(now)
  local day = math.floor(now / 86400000)
  return day, fmt(day)
end

-- The wallet after spending `cost` at `now` (`nowArg` its text) on the UTC day `day`
-- (`dayText` its text, as fmt writes it): false and an error code (6
-- INSUFFICIENT_FUNDS, 7 DAILY_LIMIT_EXCEEDED, 8 RATE_LIMITED, 17 CORRUPT_VALUE), or
-- the coins left and the rest of the new state, as values (not a table: this is
-- every gift's path), to pass to `writeSpend` as they come. Writes nothing.
-- Numbers cost a gift ~1,200 instructions each way (tonumber, fmt), so what can be
-- had as text is: a wallet whose `spent_day` is the gift's day (the usual gift) is
-- told by comparing texts; `spent_before` is read (with an HGET on `walletKey`) by a
-- late gift of the day before `spent_day` alone, the one gift that uses it; the
-- bucket's refill time goes back as the gift's own time, the text it came as. A late
-- gift (behind `rl_at`) writes `rl_at` back formatted: what tonumber read may be
-- spelled otherwise (" 5", "5e0", "inf"), and "inf" kept would end the rate limit
-- for good (every later gift behind it refills from inf - inf).
local function checkSpend(walletKey, w, now, nowArg, day, dayText, cost, ratePerS, burst)
  -- Optional fields: false when absent, nil when they do not parse.
  local limit, rlAt = w[2] and tonumber(w[2]), w[5] and tonumber(w[5])
  local coins, spent = tonumber(w[1] or '0'), tonumber(w[3] or '0')
  local rlTokens = tonumber(w[6] or '0')
  local sameDay, spentDay, spentBefore = w[4] == dayText, day, 0
  if not sameDay then spentDay = w[4] and tonumber(w[4]) end
  if not (coins and spent and rlTokens) or limit == nil or spentDay == nil or rlAt == nil then
    return false, 17
  end
  local tokens, refilledAt = burst * 1000, nowArg
  if rlAt then
    -- Concurrent gifts may reach Redis out of clock order: time never runs backwards
    -- for the bucket, so a late-arriving earlier gift refills nothing and costs no more.
    local at = now
    if rlAt > now then at, refilledAt = rlAt, fmt(rlAt) end
    tokens = math.min(burst * 1000, rlTokens + (at - rlAt) * ratePerS)
  end
  if tokens < 1000 then return false, 8 end
  if coins < cost then return false, 6 end
  local spentOnDay -- coins the sender already spent on the gift's UTC day
  local budgetDays = true -- spent_day or spent_before change (not on the usual same day)
  if sameDay then
    spentOnDay, spent, budgetDays = spent, spent + cost, false
  elseif not spentDay or day > spentDay then
    spentOnDay = 0
    if spentDay and day == spentDay + 1 then spentBefore = spent else spentBefore = 0 end
    spent, spentDay = cost, day
  elseif day == spentDay then -- the same day, written otherwise than fmt writes it
    spentOnDay, spent, budgetDays = spent, spent + cost, false
  else -- a late gift of an earlier day: counted on the day before `spent_day`, the
    -- only gift that reads what was spent then (no other gift's HMGET asks for it)
    spentOnDay = tonumber(call('HGET', walletKey, 'spent_before') or '0')
    if not spentOnDay then return false, 17 end
    spentBefore = spentOnDay + cost
  end
  if limit and spentOnDay + cost > limit then return false, 7 end
  return coins - cost, spent, refilledAt, tokens - 1000, budgetDays, spentDay, spentBefore
end

-- Write what `checkSpend` returned (`refilledAt` as text); the sender's display name
-- rides along.
local function writeSpend(walletKey, senderName, coinsLeft, spent, refilledAt, tokens,
    budgetDays, spentDay, spentBefore)
  local coinsLeftText = fmt(coinsLeft)
  call('HSET', walletKey, 'coins', coinsLeftText, 'spent', fmt(spent),
    'rl_at', refilledAt, 'rl_tokens', fmt(tokens), 'name', senderName)
  if budgetDays then
    call('HSET', walletKey, 'spent_day', fmt(spentDay), 'spent_before', fmt(spentBefore))
  end
  return coinsLeftText
end
