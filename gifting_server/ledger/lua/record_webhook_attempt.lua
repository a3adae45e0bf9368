--[[
  record_webhook_attempt: the deliverer's bookkeeping of one endpoint after an
  attempt (or after passing over events of kinds it does not take): move its cursor
  forward (never back: a deliverer whose lease ran out may report late), set its
  failure count and the time of its next attempt, and keep the attempt among its
  recent ones. An endpoint deleted meanwhile is not brought back.

  Input:
    KEYS[1] the endpoint          {s:S}:webhook:<id>
    KEYS[2] its recent attempts   {s:S}:webhook:<id>:attempts
    ARGV[1] cursor: the last event id now delivered or passed over ("" : unchanged)
    ARGV[2] failures in a row     ARGV[3] next attempt not before, unix ms
            (both "": unchanged, for a test delivery, which is outside the order)
    ARGV[4] the attempt, JSON ("" : none to keep)    ARGV[5] attempts kept

  Output:
    {0, recorded(0/1)}
    {16} INVALID_ARGUMENT
]]
--- @include "numbers"

local endpointKey, attemptsKey = KEYS[1], KEYS[2]
local cursor, failures, nextAt, attempt, kept = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local unchanged = failures == '' and nextAt == ''
if not ((cursor == '' or digits(cursor)) and (unchanged or (digits(failures) and digits(nextAt)))
    and type(attempt) == 'string' and digits(kept) and kept ~= '0') then
  return {16}
end

local stored = redis.call('HGET', endpointKey, 'cursor')
if not stored then return {0, 0} end
if cursor ~= '' and (not digits(stored) or tonumber(cursor) > tonumber(stored)) then
  redis.call('HSET', endpointKey, 'cursor', cursor)
end
if not unchanged then redis.call('HSET', endpointKey, 'failures', failures, 'next_at', nextAt) end
if attempt ~= '' then
  redis.call('LPUSH', attemptsKey, attempt)
  redis.call('LTRIM', attemptsKey, 0, tonumber(kept) - 1)
end
return {0, 1}
