-- twap/message.lua: a TWAP's publication on orders:<u>, built and published in the step that
-- changes the TWAP (its creation, a slice sent or skipped, its end), so its messages come in
-- the order of its steps, each once: the end's message cannot be lost or overtaken. Included
-- by twap_create.lua, accept_slice.lua and twap_end.lua (docs/api.md "TWAP orders").
--
-- twap_message(parent, user, cid, filled, open, now): {"seq": now, "data": the TWAP as
-- GET /v1/twaps/{userId}/{clientOrderId} shows it (services/gateway/twap.py view)}, read from
-- the parent as it stands after the step; `filled` and `open` are the caller's count over the
-- slices' orders (they live in the markets' slots, out of this script's reach).
-- twap_publish(channel, payload): PUBLISH it on `channel` ("" on a Redis Cluster with sharded
-- pub/sub: the caller SPUBLISHes what the script returns on the market's shard channel).
--
-- The JSON is built field by field: strings by cjson, integers as their decimal text (cjson
-- prints numbers with 14 digits, and a qty may have 16).

local function json_int(text)
  if not string.match(text, '^%-?%d+$') then error('not an integer: ' .. tostring(text)) end
  return text
end

local function json_text(value)
  if value == nil or value == '' then return 'null' end
  return cjson.encode(value)
end

local function twap_message(parent, user, cid, filled, open, now)
  local raw = redis.call('HGETALL', parent)
  local p = {}
  for i = 1, #raw, 2 do p[raw[i]] = raw[i + 1] end
  local k, n = tonumber(p.k), tonumber(p.n)
  local next_at = 'null'
  if p.status == 'ACTIVE' and k < n then
    next_at = string.format('%d', tonumber(p.start) + k * tonumber(p.interval))
  end
  local fields = {
    {'clientOrderId', cjson.encode(cid)}, {'userId', cjson.encode(user)},
    {'market', cjson.encode(p.market)}, {'type', '"TWAP"'}, {'side', cjson.encode(p.side)},
    {'qty', json_int(p.qty)}, {'durationMinutes', json_int(p.durationMinutes)},
    {'randomize', p.randomize == '1' and 'true' or 'false'},
    {'slippageBps', json_int(p.slippageBps)},
    {'reduceOnly', p.reduceOnly == '1' and 'true' or 'false'},
    {'sent', json_int(p.sent or '0')}, {'filled', json_int(filled)},
    {'slicesDone', json_int(p.k)}, {'slicesTotal', json_int(p.n)},
    {'slicesSkipped', json_int(p.skipped or '0')}, {'lastSkip', json_text(p.lastSkip)},
    {'open', json_int(open)}, {'status', cjson.encode(p.status)},
    {'reason', json_text(p.reason)}, {'nextSliceAt', next_at},
    {'ts', json_int(p.ts)}, {'updatedTs', json_int(p.updatedTs)},
  }
  if p.agent and p.agent ~= '' then fields[#fields + 1] = {'agent', cjson.encode(p.agent)} end
  local parts = {}
  for i, field in ipairs(fields) do parts[i] = '"' .. field[1] .. '":' .. field[2] end
  return '{"seq":' .. json_int(now) .. ',"data":{' .. table.concat(parts, ',') .. '}}'
end

local function twap_publish(channel, payload)
  if channel ~= '' then redis.call('PUBLISH', channel, payload) end
  return payload
end
