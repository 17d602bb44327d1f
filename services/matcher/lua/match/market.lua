-- match/market.lua: the market's constants (dex:{m}:cfg) and its index and mark prices.

--#include text.lua

local cfg
local product, is_deriv, mult, taker_bps, im_bps, lot, band_bps
local stp_default  -- the market's self-trade prevention mode (docs/api.md)
local market_json    -- the market's symbol as a JSON string
local trade_id_head  -- '"<market>:': a trade's id is this, its tseq and '"'
local px             -- {index, mark}, read when first needed
per_call(function()
  cfg = {}
  product, is_deriv, mult, taker_bps, im_bps, lot, band_bps = nil, nil, nil, nil, nil, nil, nil
  stp_default, market_json, trade_id_head, px = nil, nil, nil, nil
end)

-- The constants the script uses (dex:{m}:cfg holds more, for other readers).
local CFG_FIELDS = {'product', 'mult', 'takerFeeBps', 'initialMarginBps', 'lotSize',
  'priceBandBps', 'selfTradePrevention', 'tickSize', 'indexPrice', 'strike', 'optionType'}

-- Read the market's constants, once per call.
local function load_market()
  local raw = redis.call('HMGET', K_CFG, unpack(CFG_FIELDS))
  for i = 1, #CFG_FIELDS do cfg[CFG_FIELDS[i]] = raw[i] or nil end
  product = cfg.product or 'SPOT'
  is_deriv = product == 'PERP' or product == 'FUTURE' or product == 'OPTION'
  local margined = product == 'PERP' or product == 'FUTURE'
  mult = tonumber(cfg.mult or '1')
  taker_bps = tonumber(cfg.takerFeeBps or '0')
  im_bps = tonumber(cfg.initialMarginBps or '0')
  lot = tonumber(cfg.lotSize or '1')
  band_bps = margined and tonumber(cfg.priceBandBps or '0') or 0
  stp_default = cfg.selfTradePrevention
  if stp_default ~= 'EXPIRE_TAKER' and stp_default ~= 'EXPIRE_BOTH' and
      stp_default ~= 'DECREMENT' then
    stp_default = 'EXPIRE_MAKER'
  end
  market_json = q(market)
  trade_id_head = string.sub(market_json, 1, -2) .. ':'
end

-- The market's index and mark (dex:{m}:px, read once per call when a derivative order needs
-- them; before the oracle's first run the file's index, and an option's intrinsic value).
local function prices()
  if px then return px end
  local raw = redis.call('HMGET', mprefix .. 'px', 'index', 'mark')
  local index = tonumber(raw[1] or '') or tonumber(cfg.indexPrice or '0')
  local mark = tonumber(raw[2] or '')
  if mark == nil then
    if product == 'OPTION' then
      local strike = tonumber(cfg.strike or '0')
      mark = cfg.optionType == 'PUT' and math.max(strike - index, 0) or math.max(index - strike, 0)
    else
      mark = index
    end
  end
  px = {index = index, mark = mark}
  return px
end
