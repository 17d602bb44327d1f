-- match/replace.lua: the cancel half of a cancel-replace (an order command carrying
-- "replaces": the clientOrderId of an order of the same user in this market).
--
-- The old order is looked up under the command's own user only, so no one replaces another
-- user's order. It is cancelled (CXL, reason REPLACED) when it is open; when it is unknown or
-- already final, the new order is refused (REJECTED, reason REPLACE_FAILED) before it can
-- trade, and its done event releases its reservation as for any order. Both happen in the
-- call that processes the new order, so nothing else in the market comes between them.

--#include records.lua
--#include orders.lua

-- Cancel the order the command replaces: "CANCELLED", or "UNKNOWN" / "CLOSED" when it could
-- not be (the answers of a cancel command).
local function cancel_replaced(cmd)
  local old = load(oprefix .. cmd.user .. ':' .. tostring(cmd.replaces))
  if old == nil then return 'UNKNOWN' end
  if not open_order(old) then return 'CLOSED' end
  remove_resting(old, 'CXL', 'REPLACED')
  return 'CANCELLED'
end
