--[[
  numbers: how scripts check and write numbers. Not a script: `--- @include
  "numbers"` in a script is replaced by this file when scripts.py loads it.

  Lua numbers are doubles: integers are exact up to 2^53 - 1, the most any amount,
  count or time may be (config.py and the catalog keep to it).
]]

-- Plain decimal digits of an integer in 0..2^53-1: what Redis itself must parse as
-- a number (SET PX, XADD MAXLEN, HINCRBY, ZINCRBY). tonumber also takes "1e3",
-- "0x10" and " 5", which Redis refuses. Equal-length digit strings compare as numbers.
local function digits(text)
  return type(text) == 'string' and string.find(text, '^%d+$') ~= nil
    and (#text < 16 or (#text == 16 and text <= '9007199254740991'))
end

-- An integer as Redis must read it back: Redis formats a Lua number with %.17g
-- (1e+16), which HINCRBY and friends refuse.
local function fmt(n) return string.format('%.0f', n) end
