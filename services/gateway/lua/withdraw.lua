-- withdraw.lua: debit a signed withdrawal from an account and record it, atomically.
--
-- Refuses a used signature (409), then an amount above the available balance
-- (INSUFFICIENT_BALANCE) or, for a margin asset, above the free collateral = available + the
-- caller's adjustment (unrealized contribution − initial margin; INSUFFICIENT_MARGIN). On
-- success: marks the signature used, debits the total, counts the withdrawal for the auditor,
-- appends the record to the account's withdrawals stream and leaves it in the pending hash,
-- from which the gateway (or its outbox sweeper, after a crash) copies it to the relayer's
-- stream and then removes it. The withdrawal id is derived from the signature, so a copy
-- sent twice carries the same id.
--
-- KEYS[1] dex:{u}:bal         hash   "<asset>:t", "<asset>:l", "<asset>:wd"
-- KEYS[2] dex:{u}:sig:<hex>   string the used signature (PX ttl)
-- KEYS[3] dex:{u}:withdrawals stream field w: record JSON
-- KEYS[4] dex:{u}:wd-pending  hash   withdrawalId -> record JSON
-- ARGV[1] asset  ARGV[2] amount  ARGV[3] adjustment  ARGV[4] "1" for a margin asset
-- ARGV[5] withdrawalId  ARGV[6] record JSON  ARGV[7] signature ttl (ms)
-- ARGV[8] how many of the account's newest records KEYS[3] keeps (exactly; older ones leave
--         the account's list: the relayer's stream dex:withdrawal-requests has every record)
-- Returns "OK" or the refusal code.

local bal_key, sig_key, list_key, pending_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local asset, amount, adjustment, is_margin = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local withdrawal_id, record, ttl = ARGV[5], ARGV[6], ARGV[7]

if redis.call('EXISTS', sig_key) == 1 then return 'DUPLICATE' end
local held = redis.call('HMGET', bal_key, asset .. ':t', asset .. ':l')
local total, locked = tonumber(held[1] or '0'), tonumber(held[2] or '0')
if amount > total - locked then return 'INSUFFICIENT_BALANCE' end
if is_margin == '1' and amount > total - locked + adjustment then return 'INSUFFICIENT_MARGIN' end

redis.call('SET', sig_key, withdrawal_id, 'PX', ttl)
redis.call('HINCRBY', bal_key, asset .. ':t', '-' .. ARGV[2])
redis.call('HINCRBY', bal_key, asset .. ':wd', ARGV[2])
redis.call('XADD', list_key, 'MAXLEN', ARGV[8], '*', 'w', record)
redis.call('HSET', pending_key, withdrawal_id, record)
return 'OK'
