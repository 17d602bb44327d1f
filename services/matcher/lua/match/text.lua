-- match/text.lua: integers and strings as JSON text, memoized per call.

local fmt     -- string.format (a library's load sees no globals but redis: set per call)
local ints    -- integer -> its decimal text
local quoted  -- string -> its JSON string
per_call(function() fmt, ints, quoted = string.format, {}, {} end)

-- Integers as decimal text, memoized per call: prices, quantities and the clock repeat from
-- order to order, and string.format is a large share of the script's own time.
local function int(n)
  local v = ints[n]
  if v then return v end
  v = fmt('%d', n)
  ints[n] = v
  return v
end

-- JSON string: ids and addresses are plain (the gateway checks their characters), so they
-- are quoted as they are; anything else goes through cjson, which is much slower.
local function q(s)
  local v = quoted[s]
  if v then return v end
  if string.find(s, '^[%w%.%_%:%-]*$') then v = '"' .. s .. '"' else v = cjson.encode(s) end
  quoted[s] = v
  return v
end
