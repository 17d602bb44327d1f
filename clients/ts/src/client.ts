/**
 * The gateway's REST API (API.md §5, docs/api.md): every endpoint, typed answers, the
 * contract's errors thrown as {@link DexApiError} subclasses.
 *
 * Signed writes take the message fields; the client fills `userId` (the signer's address),
 * `ts` (now) and an order's `product` (its market's), signs with the exchange's published
 * types (`GET /v1/info`, read once) and sends the body plus `sig`.
 */
import { errorFromAnswer } from "./errors.js";
import { Signing, wireValue, type Int, type TypedDataSigner } from "./signing.js";
import type {
  Accepted,
  Agent,
  AuditReport,
  Balance,
  BatchResult,
  Candle,
  CancelReplaced,
  DeadmanSwitch,
  Depth,
  Fill,
  Info,
  Leverage,
  Margin,
  Market,
  MarketHealth,
  MarketStatus,
  Order,
  OrderType,
  Position,
  Side,
  SystemAccounts,
  Ticker,
  TimeInForce,
  Trade,
  TriggerSource,
  Twap,
  Withdrawal,
} from "./types.js";

export interface ClientOptions {
  /** The gateway, e.g. `http://127.0.0.1:8000` (`""` = the page's own origin). */
  baseUrl: string;
  /** Signs writes; needed only for them. */
  signer?: TypedDataSigner;
  /** `DEX_ADMIN_TOKEN`, sent only as `Authorization: Bearer` to `/v1/admin/*`. */
  adminToken?: string;
  fetch?: typeof fetch;
}

export interface OrderParams {
  market: string;
  side: Side;
  type?: OrderType;
  price: Int;
  qty: Int;
  clientOrderId?: string;
  /** Any of these makes the order an OrderV2. */
  timeInForce?: TimeInForce;
  reduceOnly?: boolean;
  expiresAt?: Int;
  /** Makes the order an OrderV3 (docs/api.md "Self-trade prevention"). */
  selfTradePrevention?: "" | "EXPIRE_MAKER" | "EXPIRE_TAKER" | "EXPIRE_BOTH" | "DECREMENT";
  /** Any of these makes the order an OrderV4 (docs/api.md "Trigger orders", "Attached TP/SL"). */
  triggerPrice?: Int;
  triggerSource?: TriggerSource | "";
  trailingDelta?: Int;
  trailingUnit?: "" | "TICKS" | "BPS";
  closePosition?: boolean;
  takeProfitPrice?: Int;
  stopLossPrice?: Int;
}

export interface TwapParams {
  market: string;
  side: Side;
  qty: Int;
  /** 5 to 1440; two slices a minute. */
  durationMinutes: Int;
  /** 1 to 5000 past the best opposite price (default 50). */
  slippageBps?: Int;
  randomize?: boolean;
  reduceOnly?: boolean;
  clientOrderId?: string;
}

const V4_FIELDS = ["triggerPrice", "triggerSource", "trailingDelta", "trailingUnit", "closePosition", "takeProfitPrice", "stopLossPrice"] as const;

export interface BatchAction {
  kind: "PLACE" | "CANCEL" | "AMEND";
  market: string;
  clientOrderId: string;
  side?: Side | "";
  type?: OrderType | "";
  price?: Int;
  qty?: Int;
  timeInForce?: TimeInForce | "";
  reduceOnly?: boolean;
  expiresAt?: Int;
  expectedFilled?: Int;
}

let counter = 0;

/** A fresh clientOrderId: 1–64 of `A-Z a-z 0-9 . _ : -`. */
export function newClientOrderId(prefix = "ts"): string {
  counter = (counter + 1) % 1_000_000;
  const random = Math.floor(Math.random() * 0x100000000).toString(36);
  return `${prefix}-${Date.now().toString(36)}-${random}-${counter}`;
}

export class DexClient {
  readonly baseUrl: string;
  signer: TypedDataSigner | undefined;
  adminToken: string | undefined;
  private readonly fetcher: typeof fetch;
  private info: Promise<Info> | undefined;
  private signing: Promise<Signing> | undefined;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.signer = options.signer;
    this.adminToken = options.adminToken;
    this.fetcher = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  // -- transport ----------------------------------------------------------------------
  private async request<T>(method: string, path: string, body?: unknown, admin = false): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (admin) {
      if (!this.adminToken) throw new Error("an admin call needs the client's adminToken");
      headers["Authorization"] = `Bearer ${this.adminToken}`;
    }
    const response = await this.fetcher(this.baseUrl + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(wireValue(body)),
    });
    const text = await response.text();
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = text;
    }
    if (!response.ok) throw errorFromAnswer(response.status, parsed, response.headers.get("Retry-After"));
    return parsed as T;
  }

  private get<T>(path: string, query: Record<string, string | number | boolean | undefined> = {}): Promise<T> {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== "") params.set(key, String(value === true ? 1 : value));
    }
    const tail = params.toString();
    return this.request<T>("GET", tail ? `${path}?${tail}` : path);
  }

  // -- signing --------------------------------------------------------------------------
  /** The exchange's info, read once (domain, types, markets, assets). */
  getInfo(fresh = false): Promise<Info> {
    if (fresh || this.info === undefined) {
      this.info = this.get<Info>("/v1/info");
      this.info.catch(() => (this.info = undefined));
    }
    return this.info;
  }

  /** The signing of the exchange's published domain and types. */
  getSigning(): Promise<Signing> {
    if (this.signing === undefined) {
      this.signing = this.getInfo().then((info) => new Signing(info.domain, info.types));
      this.signing.catch(() => (this.signing = undefined));
    }
    return this.signing;
  }

  /** `message` signed as `primary`, with `userId` and `ts` filled when absent. */
  async signBody(primary: string, message: Record<string, unknown>): Promise<Record<string, unknown>> {
    const signer = this.signer;
    if (signer === undefined) throw new Error("a signed write needs the client's signer");
    const signing = await this.getSigning();
    const filled = { userId: await signer.getAddress(), ts: Date.now(), ...message };
    return signing.sign(signer, primary, filled);
  }

  private async marketOf(symbol: string): Promise<Market | undefined> {
    return (await this.getInfo()).markets.find((market) => market.symbol === symbol);
  }

  /** The signed body of an order: Order, OrderV2 (a time in force, reduce-only or expiry), OrderV3 (a self-trade mode) or OrderV4 (a trigger or attached TP/SL field). */
  async orderBody(params: OrderParams): Promise<Record<string, unknown>> {
    const market = await this.marketOf(params.market);
    const base: Record<string, unknown> = {
      clientOrderId: params.clientOrderId ?? newClientOrderId(),
      market: params.market,
      side: params.side,
      type: params.type ?? "LIMIT",
      price: params.price,
      qty: params.qty,
      product: market?.product ?? "SPOT",
    };
    const v4 = V4_FIELDS.some((field) => params[field] !== undefined);
    const v2 = v4 || params.timeInForce !== undefined || params.reduceOnly !== undefined || params.expiresAt !== undefined;
    if (params.selfTradePrevention === undefined && !v2) return this.signBody("Order", base);
    const extended = {
      ...base,
      timeInForce: params.timeInForce ?? "GTC",
      reduceOnly: params.reduceOnly ?? false,
      expiresAt: params.expiresAt ?? 0,
    };
    if (params.selfTradePrevention === undefined && !v4) return this.signBody("OrderV2", extended);
    const v3 = { ...extended, selfTradePrevention: params.selfTradePrevention ?? "" };
    if (!v4) return this.signBody("OrderV3", v3);
    return this.signBody("OrderV4", {
      ...v3,
      triggerPrice: params.triggerPrice ?? 0,
      triggerSource: params.triggerSource ?? "",
      trailingDelta: params.trailingDelta ?? 0,
      trailingUnit: params.trailingUnit ?? "",
      closePosition: params.closePosition ?? false,
      takeProfitPrice: params.takeProfitPrice ?? 0,
      stopLossPrice: params.stopLossPrice ?? 0,
    });
  }

  /** The signed body of a TWAP order. */
  twapBody(params: TwapParams): Promise<Record<string, unknown>> {
    return this.signBody("Twap", {
      market: params.market,
      clientOrderId: params.clientOrderId ?? newClientOrderId("twap"),
      side: params.side,
      qty: params.qty,
      durationMinutes: params.durationMinutes,
      randomize: params.randomize ?? false,
      slippageBps: params.slippageBps ?? 50,
      reduceOnly: params.reduceOnly ?? false,
    });
  }

  /** The signed body of a leverage choice (`initialMarginBps` 0: back to the market's). */
  setLeverageBody(market: string, initialMarginBps: Int): Promise<Record<string, unknown>> {
    return this.signBody("SetLeverage", { market, initialMarginBps });
  }

  // -- public reads -----------------------------------------------------------------------
  health(): Promise<{ status: string }> {
    return this.get("/v1/health");
  }
  markets(): Promise<Market[]> {
    return this.get("/v1/markets");
  }
  market(symbol: string): Promise<Market> {
    return this.get(`/v1/markets/${encodeURIComponent(symbol)}`);
  }
  depth(symbol: string, limit?: number): Promise<Depth> {
    return this.get(`/v1/markets/${encodeURIComponent(symbol)}/depth`, { limit });
  }
  trades(symbol: string, limit?: number): Promise<Trade[]> {
    return this.get(`/v1/markets/${encodeURIComponent(symbol)}/trades`, { limit });
  }
  ticker(symbol: string): Promise<Ticker> {
    return this.get(`/v1/markets/${encodeURIComponent(symbol)}/ticker`);
  }
  candles(symbol: string, interval = "1m", limit?: number): Promise<Candle[]> {
    return this.get(`/v1/markets/${encodeURIComponent(symbol)}/candles`, { interval, limit });
  }
  systemAccounts(): Promise<SystemAccounts> {
    return this.get("/v1/system/accounts");
  }
  /** `GET /metrics`: the Prometheus text. */
  async metrics(): Promise<string> {
    const response = await this.fetcher(`${this.baseUrl}/metrics`);
    if (!response.ok) throw errorFromAnswer(response.status, null);
    return response.text();
  }

  // -- account reads ------------------------------------------------------------------------
  order(userId: string, clientOrderId: string): Promise<Order> {
    return this.get(`/v1/orders/${encodeURIComponent(userId)}/${encodeURIComponent(clientOrderId)}`);
  }
  orders(userId: string, options: { market?: string; open?: boolean; limit?: number } = {}): Promise<Order[]> {
    return this.get(`/v1/accounts/${encodeURIComponent(userId)}/orders`, {
      market: options.market,
      open: options.open ? 1 : undefined,
      limit: options.limit,
    });
  }
  fills(userId: string, options: { market?: string; limit?: number } = {}): Promise<Fill[]> {
    return this.get(`/v1/accounts/${encodeURIComponent(userId)}/fills`, options);
  }
  balances(userId: string): Promise<Record<string, Balance>> {
    return this.get(`/v1/accounts/${encodeURIComponent(userId)}/balances`);
  }
  positions(userId: string): Promise<Position[]> {
    return this.get(`/v1/accounts/${encodeURIComponent(userId)}/positions`);
  }
  margin(userId: string): Promise<Record<string, Margin>> {
    return this.get(`/v1/accounts/${encodeURIComponent(userId)}/margin`);
  }
  withdrawals(userId: string, limit?: number): Promise<Withdrawal[]> {
    return this.get(`/v1/accounts/${encodeURIComponent(userId)}/withdrawals`, { limit });
  }
  agents(userId: string): Promise<Agent[]> {
    return this.get(`/v1/accounts/${encodeURIComponent(userId)}/agents`);
  }
  scheduledCancels(userId: string): Promise<DeadmanSwitch[]> {
    return this.get(`/v1/orders/schedule-cancel/${encodeURIComponent(userId)}`);
  }
  /** One TWAP and its progress (404 `NOT_FOUND` if none). */
  twap(userId: string, clientOrderId: string): Promise<Twap> {
    return this.get(`/v1/twaps/${encodeURIComponent(userId)}/${encodeURIComponent(clientOrderId)}`);
  }
  /** The account's active TWAPs, oldest first. */
  twaps(userId: string): Promise<Twap[]> {
    return this.get(`/v1/twaps/${encodeURIComponent(userId)}`);
  }
  /** Every derivative market's initial margin for the account, in the markets file's order. */
  leverage(userId: string): Promise<Leverage[]> {
    return this.get(`/v1/accounts/${encodeURIComponent(userId)}/leverage`);
  }

  // -- signed writes ---------------------------------------------------------------------------
  /** `POST /v1/orders` of a body signed already (e.g. by {@link orderBody}). */
  postOrder(body: Record<string, unknown>, wait: true): Promise<Order>;
  postOrder(body: Record<string, unknown>, wait?: false): Promise<Accepted>;
  postOrder(body: Record<string, unknown>, wait = false): Promise<Order | Accepted> {
    return this.request("POST", wait ? "/v1/orders?wait=1" : "/v1/orders", body);
  }
  /** Sign and place an order; with `wait`, answer the order once the matcher processed it. */
  async placeOrder(params: OrderParams, wait: true): Promise<Order>;
  async placeOrder(params: OrderParams, wait?: false): Promise<Accepted>;
  async placeOrder(params: OrderParams, wait = false): Promise<Order | Accepted> {
    const body = await this.orderBody(params);
    return wait ? this.postOrder(body, true) : this.postOrder(body, false);
  }
  /** A stop (`STOP_LIMIT` at `price`, `STOP_MARKET` at price 0): BUY fires at or above `triggerPrice`, SELL at or below. */
  async placeStop(params: OrderParams & { triggerPrice: Int }): Promise<Order> {
    const type = params.type ?? (BigInt(params.price) > 0n ? "STOP_LIMIT" : "STOP_MARKET");
    return this.postOrder(await this.orderBody({ ...params, type }), true);
  }
  /** A take-profit (`TAKE_PROFIT_LIMIT` / `_MARKET`): BUY fires at or below `triggerPrice`, SELL at or above. */
  async placeTakeProfit(params: OrderParams & { triggerPrice: Int }): Promise<Order> {
    const type = params.type ?? (BigInt(params.price) > 0n ? "TAKE_PROFIT_LIMIT" : "TAKE_PROFIT_MARKET");
    return this.postOrder(await this.orderBody({ ...params, type }), true);
  }
  /** A `TRAILING_STOP_MARKET` `trailingDelta` `TICKS` or `BPS` behind the extreme price since placement. */
  async placeTrailingStop(params: OrderParams & { trailingDelta: Int; trailingUnit: "TICKS" | "BPS" }): Promise<Order> {
    return this.postOrder(await this.orderBody({ ...params, type: "TRAILING_STOP_MARKET" }), true);
  }
  /** Work `qty` into the market over `durationMinutes` in IOC slices (docs/api.md "TWAP orders"). */
  async placeTwap(params: TwapParams): Promise<Twap> {
    return this.request("POST", "/v1/orders/twap", await this.twapBody(params));
  }
  /** End a TWAP `CXL` (a Cancel naming its id); answers the TWAP. */
  async cancelTwap(market: string, clientOrderId: string): Promise<Twap> {
    return this.request("POST", "/v1/orders/cancel", await this.signBody("Cancel", { market, clientOrderId }));
  }
  /** Choose a derivative market's initial margin (leverage = 10000 / bps); 0: the market's again. */
  async setLeverage(market: string, initialMarginBps: Int): Promise<Leverage> {
    return this.request("POST", "/v1/accounts/leverage", await this.setLeverageBody(market, initialMarginBps));
  }
  async cancel(market: string, clientOrderId: string): Promise<Order> {
    return this.request("POST", "/v1/orders/cancel", await this.signBody("Cancel", { market, clientOrderId }));
  }
  /** Cancel every open order in `market` (`""` = every market). */
  async cancelAll(market = ""): Promise<{ cancelled: number }> {
    return this.request("POST", "/v1/orders/cancel-all", await this.signBody("CancelAll", { market }));
  }
  async cancelReplace(cancelClientOrderId: string, params: OrderParams): Promise<CancelReplaced> {
    const market = await this.marketOf(params.market);
    const body = await this.signBody("CancelReplace", {
      clientOrderId: params.clientOrderId ?? newClientOrderId(),
      market: params.market,
      side: params.side,
      type: params.type ?? "LIMIT",
      price: params.price,
      qty: params.qty,
      product: market?.product ?? "SPOT",
      timeInForce: params.timeInForce ?? "GTC",
      reduceOnly: params.reduceOnly ?? false,
      expiresAt: params.expiresAt ?? 0,
      cancelClientOrderId,
    });
    return this.request("POST", "/v1/orders/cancel-replace", body);
  }
  /** Amend a resting order to `price` and a new total `qty`; `expectedFilled` -1 = no guard. */
  async amend(market: string, clientOrderId: string, price: Int, qty: Int, expectedFilled: Int = -1): Promise<Order> {
    const body = await this.signBody("Amend", { market, clientOrderId, price, qty, expectedFilled });
    return this.request("POST", "/v1/orders/amend", body);
  }
  /** One signature over up to 50 actions; unused fields get their blank values. */
  async batch(actions: BatchAction[], atomic = false): Promise<BatchResult> {
    const filled = actions.map((action) => ({
      side: "",
      type: "",
      price: 0,
      qty: 0,
      timeInForce: "",
      reduceOnly: false,
      expiresAt: 0,
      expectedFilled: 0,
      ...action,
    }));
    return this.request("POST", "/v1/orders/batch", await this.signBody("Batch", { atomic, actions: filled }));
  }
  /** Arm (or renew) the dead-man's switch; `deadline` 0 disarms it. */
  async scheduleCancel(deadline: Int, market = ""): Promise<DeadmanSwitch> {
    return this.request("POST", "/v1/orders/schedule-cancel", await this.signBody("ScheduleCancel", { market, deadline }));
  }
  async withdraw(asset: string, amount: Int): Promise<Withdrawal> {
    return this.request("POST", "/v1/withdrawals", await this.signBody("Withdraw", { asset, amount }));
  }
  async approveAgent(agent: string, options: { name?: string; scope?: "TRADE" | "CANCEL_ONLY"; markets?: string; expiresAt?: Int } = {}): Promise<Agent> {
    const body = await this.signBody("ApproveAgent", {
      agent,
      name: options.name ?? "",
      scope: options.scope ?? "TRADE",
      markets: options.markets ?? "",
      expiresAt: options.expiresAt ?? 0,
    });
    return this.request("POST", "/v1/accounts/agents", body);
  }
  async revokeAgent(agent: string): Promise<{ agent: string; revoked: boolean }> {
    return this.request("POST", "/v1/accounts/agents/revoke", await this.signBody("RevokeAgent", { agent }));
  }

  // -- admin (bearer token) ---------------------------------------------------------------------
  deposit(userId: string, asset: string, amount: Int, depositId?: string): Promise<Balance> {
    const body: Record<string, unknown> = { userId, asset, amount: wireValue(amount) };
    if (depositId !== undefined) body["depositId"] = depositId;
    return this.request("POST", "/v1/admin/deposits", body, true);
  }
  pushOracle(market: string, indexPrice: Int): Promise<Record<string, unknown>> {
    return this.request("POST", "/v1/admin/oracle", { market, indexPrice }, true);
  }
  halt(market: string): Promise<Market> {
    return this.request("POST", `/v1/admin/markets/${encodeURIComponent(market)}/halt`, undefined, true);
  }
  resume(market: string): Promise<Market> {
    return this.request("POST", `/v1/admin/markets/${encodeURIComponent(market)}/resume`, undefined, true);
  }
  setMarketStatus(market: string, status: MarketStatus): Promise<Market> {
    return this.request("POST", `/v1/admin/markets/${encodeURIComponent(market)}/status`, { status }, true);
  }
  audit(): Promise<AuditReport> {
    return this.request("GET", "/v1/admin/audit", undefined, true);
  }
  /** Every market's status, stream backlog and settlement lag. */
  marketHealth(): Promise<MarketHealth[]> {
    return this.request("GET", "/v1/admin/markets/health", undefined, true);
  }
}
