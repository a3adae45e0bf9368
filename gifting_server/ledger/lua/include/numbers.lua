--[[
  numbers: how scripts check and write numbers. Not a script: `--- @include
  "numbers"` in a script is replaced by this file when scripts.py loads it.

  Lua numbers are doubles: integers are exact up to 2^53 - 1, the most any amount,
  count or time may be (config.py and the catalog keep to it).
]]

local MAX = 9007199254740991 -- 2^53 - 1

-- Globals a gift uses several times, looked up once a script call: a global is a
-- table lookup at each use (`redis.call` two), ~100 instructions each on a gift's
-- path (docs/performance.md). The gift's scripts and includes call `call`.
local call, tonumber, format = redis.call, tonumber, string.format

-- A decimal integer within [lo, hi], or nil. (tonumber alone takes "1e3", "0x10", "inf".)
local function int(text, lo, hi)
  if type(text) ~= 'string' or not string.find(text, '^%-?%d+$') then return nil end
  local n = tonumber(text)
  if n < lo or n > hi then return nil end
  return n
end

-- A stored integer field: `default` when absent, nil when it does not parse.
local function stored(value, default)
  if not value then return default end
  return int(value, -MAX, MAX)
end

-- Plain decimal digits of an integer in 0..2^53-1: what Redis itself must parse as
-- a number (SET PX, XADD MAXLEN, HINCRBY, ZINCRBY). tonumber also takes "1e3",
-- "0x10" and " 5", which Redis refuses. Equal-length digit strings compare as numbers.
local function digits(text)
  return type(text) == 'string' and string.find(text, '^%d+$') ~= nil
    and (#text < 16 or (#text == 16 and text <= '9007199254740991'))
end

-- An integer as Redis must read it back: Redis formats a Lua number with %.17g
-- (1e+16), which HINCRBY and friends refuse. '%d' (a C long: exact for every integer
-- up to 2^53) formats it as an integer; '%.0f' formats a double, which costs every
-- gift ~1,200 instructions more per number (docs/performance.md).
local function fmt(n) return format('%d', n) end
