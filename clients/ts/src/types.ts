/**
 * The shapes the gateway answers (API.md §5, docs/api.md). Prices and quantities are JSON
 * integers (below 2^53, so `number`); balances and amounts are integer strings in atomic units.
 */
import type { Domain, Types } from "./signing.js";

export type Side = "BUY" | "SELL";
export type OrderType =
  | "LIMIT"
  | "MARKET"
  | "STOP_MARKET"
  | "STOP_LIMIT"
  | "TAKE_PROFIT_MARKET"
  | "TAKE_PROFIT_LIMIT"
  | "TRAILING_STOP_MARKET";
export type TriggerSource = "MARK" | "LAST" | "INDEX";
export type TimeInForce = "GTC" | "IOC" | "FOK" | "POST_ONLY";
export type Product = "SPOT" | "PERP" | "FUTURE" | "OPTION";
export type MarketStatus = "OPEN" | "HALTED" | "EXPIRED" | "CANCEL_ONLY" | "POST_ONLY" | "REDUCE_ONLY" | (string & {});
export type OrderStatus = "ACCEPTED" | "UNTRIGGERED" | "NEW" | "PARTIAL" | "FILLED" | "CXL" | "EXP" | "REJECTED";

export interface Market {
  symbol: string;
  status: MarketStatus;
  product: Product;
  base: string;
  quote: string;
  priceScale: number;
  qtyScale: number;
  tickSize: number;
  lotSize: number;
  minQty: number;
  makerFeeBps: number;
  takerFeeBps: number;
  [field: string]: unknown;
}

export interface Asset {
  decimals: number;
  [field: string]: unknown;
}

export interface Info {
  domain: Domain;
  types: Types;
  markets: Market[];
  assets: Record<string, Asset>;
  serverTime: number;
}

/** `[price, qty]` levels, best first. */
export type Level = [number, number];

export interface Depth {
  market: string;
  seq: number;
  bids: Level[];
  asks: Level[];
}

export interface Trade {
  tradeId: string;
  market: string;
  price: number;
  qty: number;
  takerSide: Side;
  buyer: string;
  seller: string;
  buyOid: string;
  sellOid: string;
  ts: number;
  seq: number;
}

export interface Ticker {
  last: number | null;
  bestBid: number | null;
  bestAsk: number | null;
  open24h: number | null;
  high24h: number | null;
  low24h: number | null;
  volume24h: number | string | null;
  quoteVolume24h: number | string | null;
  indexPrice: number | null;
  markPrice: number | null;
  fundingRate: number | null;
  nextFundingTs: number | null;
  openInterest: number | string | null;
}

export interface Candle {
  t: number;
  o: number;
  h: number;
  l: number;
  c: number;
  v: number;
}

export interface Order {
  clientOrderId: string;
  userId: string;
  market: string;
  side: Side;
  type: OrderType;
  timeInForce: TimeInForce;
  reduceOnly: boolean;
  expiresAt: number;
  price: number;
  qty: number;
  filled: number;
  status: OrderStatus;
  reason: string | null;
  ts: number;
  updatedTs: number;
  agent?: string;
  /** A trigger order's (docs/api.md "Trigger orders"); `triggerSource` resolved, never `""`. */
  triggerPrice?: number;
  triggerSource?: TriggerSource;
  triggered?: boolean;
  trailingDelta?: number;
  trailingUnit?: "TICKS" | "BPS";
  [field: string]: unknown;
}

/** A TWAP order and its progress (docs/api.md "TWAP orders"). */
export interface Twap {
  clientOrderId: string;
  userId: string;
  market: string;
  type: "TWAP";
  side: Side;
  qty: number;
  durationMinutes: number;
  randomize: boolean;
  slippageBps: number;
  reduceOnly: boolean;
  sent: number;
  filled: number;
  slicesDone: number;
  slicesTotal: number;
  slicesSkipped: number;
  lastSkip: string | null;
  open: number;
  status: "ACTIVE" | "FILLED" | "EXP" | "CXL";
  reason: string | null;
  nextSliceAt: number | null;
  ts: number;
  updatedTs: number;
  agent?: string;
}

/** An account's initial margin in one derivative market (docs/api.md "Leverage"). */
export interface Leverage {
  userId: string;
  market: string;
  initialMarginBps: number;
  /** For display: `10000 / initialMarginBps` rounded down to hundredths. */
  leverage: string;
  chosen: boolean;
}

export interface Accepted {
  clientOrderId: string;
  status: "ACCEPTED";
}

export interface Fill {
  tradeId: string;
  market: string;
  clientOrderId: string;
  side: Side;
  price: number;
  qty: number;
  fee: string;
  liquidity: "MAKER" | "TAKER";
  ts: number;
}

export interface Balance {
  total: string;
  available: string;
  locked: string;
}

export interface Position {
  market: string;
  size: number | string;
  entryNotional: number | string;
  avgEntry: string;
  realizedPnl: number | string;
  unrealizedPnl: number | string;
  markPrice: number | null;
  fundingPaid: number | string;
  liquidationPrice: number | null;
}

export interface Margin {
  equity: string;
  initialMargin: string;
  maintenanceMargin: string;
  freeCollateral: string;
  unrealizedPnl: string;
}

export interface Withdrawal {
  withdrawalId: string;
  userId?: string;
  asset: string;
  amount: string;
  status: "PENDING" | "SENT" | "CONFIRMED" | "FAILED";
  ts?: number;
  /** From `SENT` on: the last transaction the bridge sent for it. */
  txHash?: string;
}

export interface Agent {
  agent: string;
  name: string;
  scope: "TRADE" | "CANCEL_ONLY";
  markets: string;
  expiresAt: number;
  approvedAt: number;
}

export interface DeadmanSwitch {
  userId: string;
  market: string;
  deadline: number;
}

export interface CancelReplaced {
  cancelled: Order | null;
  order: Order;
}

export interface BatchResult {
  [field: string]: unknown;
}

export interface SystemAccounts {
  fees: Record<string, string>;
  insurance: Record<string, string>;
  insurancePositions: Position[];
}

/** `GET /v1/admin/markets/health`: one row per market (docs/api.md "Operator reads"). */
export interface MarketHealth {
  market: string;
  status: MarketStatus;
  backlog: number;
  unsettledEvents: number;
  settlementLagMs: number;
}

export interface AuditReport {
  ok: boolean;
  assets: Record<string, Record<string, string>>;
  invariants: Record<string, { ok: boolean; problems?: string[]; count?: number }>;
  warnings: string[];
}
