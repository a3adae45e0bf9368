--[[
  channel_board: a streamer's all-time board of top gifters, as the gifts made it:
  the all-time board {u:T}:lb:all plus the streamer's open day board (the wallet's
  field `lb_open`), whose gifts are not folded into it yet (include "earn",
  `bumpChannelBoards`). Read in one script so that a fold between two reads cannot
  count a day twice or not at all. Reads only.

  Input:
    KEYS[1] streamer wallet           {u:T}:wallet
    KEYS[2] channel leaderboard, all  {u:T}:lb:all
    ARGV[1] how many of the best to return; 0: every gifter

  Output:
    member, coins, member, coins, ... best first, as ZREVRANGE ... WITHSCORES gives
    them (equal coins: the greater member first)
    {16} INVALID_ARGUMENT (ARGV[1] is not a count)
]]
--- @include "numbers"

local walletKey, allKey = KEYS[1], KEYS[2]
local limit = int(ARGV[1], 0, MAX)
if not limit then return {16} end

local open = redis.call('HGET', walletKey, 'lb_open')
if not open then return redis.call('ZREVRANGE', allKey, 0, limit - 1, 'WITHSCORES') end

-- The open day's gifters with their two sums, and the best of the rest: those of the
-- all-time board's first `limit + #day` that did not gift on the open day.
local day = redis.call('ZRANGE', open, 0, -1, 'WITHSCORES')
local rows, onDay = {}, {}
for i = 1, #day, 2 do
  onDay[day[i]] = true
  rows[#rows + 1] = {day[i], tonumber(day[i + 1])}
end
if #rows > 0 then
  local members = {}
  for i, row in ipairs(rows) do members[i] = row[1] end
  local before = redis.call('ZMSCORE', allKey, unpack(members))
  for i, row in ipairs(rows) do
    if before[i] then row[2] = row[2] + tonumber(before[i]) end
  end
end
local stop = limit == 0 and -1 or limit + #rows - 1
local top = redis.call('ZREVRANGE', allKey, 0, stop, 'WITHSCORES')
for i = 1, #top, 2 do
  if not onDay[top[i]] then rows[#rows + 1] = {top[i], tonumber(top[i + 1])} end
end
table.sort(rows, function(a, b)
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[1] > b[1]
end)
local reply = {}
for i = 1, (limit == 0 or limit > #rows) and #rows or limit do
  reply[#reply + 1] = rows[i][1]
  reply[#reply + 1] = fmt(rows[i][2])
end
return reply
