--[[
  battle_step: move a battle's record from one of the given states to another,
  setting the given fields with it; the states and who moves them are in
  docs/battles.md. A record in none of the given states is left as it is and its
  state answered, so a repeated step answers the battle's current state.

  Input:
    KEYS[1] battle record   {s:A}:battle:<id>
    ARGV[1] the states it may move from, comma separated ("inviting,invited")
    ARGV[2] the state it moves to
    ARGV[3..] field, value, ... written with the move

  Output:
    {0, moved(1/0), the record's state after the call}
    {22} UNKNOWN_BATTLE   {16} INVALID_ARGUMENT (fields not in pairs)
]]
local recordKey, from, to = KEYS[1], ARGV[1], ARGV[2]
if #ARGV % 2 ~= 0 or type(to) ~= 'string' then return {16} end
local status = redis.call('HGET', recordKey, 'status')
if not status then return {22} end
if not string.find(',' .. from .. ',', ',' .. status .. ',', 1, true) then
  return {0, 0, status}
end
redis.call('HSET', recordKey, 'status', to, unpack(ARGV, 3))
return {0, 1, to}
