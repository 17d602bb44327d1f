// The exchange's web page: everything goes through the TypeScript SDK (clients/ts), REST to the
// gateway (same origin) and market data from the broadcaster's /ws. Orders are signed here, in
// the browser: with a key generated or pasted into the page (held in memory only) or with an
// injected wallet. The admin token of the operator view is kept in memory and sent only as the
// bearer header.
import { BrowserProvider, Wallet } from "ethers";
import { CandlestickSeries, createChart, type IChartApi, type ISeriesApi, type UTCTimestamp } from "lightweight-charts";
import {
  BookSync,
  DexApiError,
  DexClient,
  Stream,
  type Market,
  type Order,
  type Trade,
  type TypedDataSigner,
} from "../../ts/src/index.js";
import "./style.css";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;

/** `units / 10^scale` as a decimal string, from integers only. */
export function formatScaled(units: number | string | bigint, scale: number): string {
  const value = BigInt(units);
  const sign = value < 0n ? "-" : "";
  const digits = (value < 0n ? -value : value).toString().padStart(scale + 1, "0");
  return scale === 0 ? sign + digits : `${sign}${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
}

/** A decimal string in units of `10^-scale` (refused if it has more decimals than `scale`). */
export function parseScaled(text: string, scale: number): bigint {
  const match = /^\s*(\d*)(?:\.(\d*))?\s*$/.exec(text);
  if (!match || (match[1] === "" && (match[2] ?? "") === "")) throw new Error(`not a positive decimal number: ${JSON.stringify(text)}`);
  const fraction = match[2] ?? "";
  if (fraction.length > scale) throw new Error(`${text} has more than ${scale} decimals`);
  return BigInt((match[1] || "0") + fraction.padEnd(scale, "0"));
}

function describe(error: unknown): string {
  if (error instanceof DexApiError) return `${error.code}: ${error.message.replace(/^\d+ \w+: /, "")}`;
  return error instanceof Error ? error.message : String(error);
}

function rows(tbody: HTMLElement, cells: (string | Node)[][]): void {
  tbody.replaceChildren(
    ...cells.map((row) => {
      const tr = document.createElement("tr");
      for (const cell of row) {
        const td = document.createElement("td");
        td.append(cell);
        tr.append(td);
      }
      return tr;
    }),
  );
}

interface Config {
  broadcasterPort: number;
}

const client = new DexClient({ baseUrl: "" });
const admin = new DexClient({ baseUrl: "" });
let markets: Market[] = [];
let market: Market | undefined;
let address: string | undefined;
let stream: Stream;
let book: BookSync | undefined;
let trades: Trade[] = [];
let chart: IChartApi | undefined;
let candles: ISeriesApi<"Candlestick"> | undefined;

// -- market data ----------------------------------------------------------------------------
function renderBook(): void {
  if (!book || !market) return;
  const { priceScale, qtyScale } = market;
  const asks = book.book.levels("asks", 15).reverse();
  const bids = book.book.levels("bids", 15);
  rows($("asks"), asks.map(([p, q]) => [formatScaled(p, priceScale), formatScaled(q, qtyScale)]));
  rows($("bids"), bids.map(([p, q]) => [formatScaled(p, priceScale), formatScaled(q, qtyScale)]));
  $("depth-seq").textContent = book.synced ? `seq ${book.book.seq}` : "resyncing";
}

function renderTrades(): void {
  if (!market) return;
  const { priceScale, qtyScale } = market;
  rows(
    $("trades").querySelector("tbody")!,
    trades.slice(0, 30).map((t) => [new Date(t.ts).toLocaleTimeString(), formatScaled(t.price, priceScale), formatScaled(t.qty, qtyScale), t.takerSide]),
  );
}

async function loadCandles(): Promise<void> {
  if (!market || !candles) return;
  const scale = 10 ** market.priceScale; // display only: the chart draws floats
  const list = await client.candles(market.symbol, "1m", 300);
  candles.setData(list.map((c) => ({ time: (c.t / 1000) as UTCTimestamp, open: c.o / scale, high: c.h / scale, low: c.l / scale, close: c.c / scale })));
}

function selectMarket(symbol: string): void {
  book?.close();
  if (market) stream.unsubscribe(`trade:${market.symbol}`);
  market = markets.find((m) => m.symbol === symbol);
  if (!market) return;
  $("market-status").textContent = market.status;
  book = new BookSync(stream, market.symbol);
  book.onChange(renderBook);
  trades = [];
  stream.subscribe(`trade:${market.symbol}`, (message) => {
    if (message.type === "snapshot") trades = [...(message.data as Trade[])].sort((a, b) => b.seq - a.seq);
    else if (message.type === "update") trades = [...[...(message.data as Trade[])].reverse(), ...trades].slice(0, 100);
    else return;
    renderTrades();
    if (message.type === "update") void loadCandles();
  });
  renderBook();
  void loadCandles();
  void refreshAccount();
}

// -- the account ------------------------------------------------------------------------------
async function useSigner(signer: TypedDataSigner): Promise<void> {
  if (address) stream.unsubscribe(`orders:${address}`);
  client.signer = signer;
  address = await signer.getAddress();
  $("address").textContent = address;
  stream.subscribe(`orders:${address}`, () => void refreshAccount());
  await refreshAccount();
}

async function refreshMarkets(): Promise<void> {
  const listed = await client.markets();
  const tickers = await Promise.all(listed.map((m) => client.ticker(m.symbol).catch(() => null)));
  const body = $("markets").querySelector("tbody")!;
  rows(
    body,
    listed.map((m, i) => {
      const ticker = tickers[i];
      const last = ticker?.last;
      return [
        m.symbol,
        m.product,
        m.status,
        last === null || last === undefined ? "—" : formatScaled(last, m.priceScale),
        ticker?.volume24h === null || ticker?.volume24h === undefined ? "—" : formatScaled(ticker.volume24h, m.qtyScale),
      ];
    }),
  );
  body.querySelectorAll("tr").forEach((tr, i) => {
    const symbol = listed[i]!.symbol;
    tr.dataset["market"] = symbol;
    tr.classList.toggle("selected", symbol === market?.symbol);
    tr.addEventListener("click", () => {
      $<HTMLSelectElement>("market").value = symbol;
      selectMarket(symbol);
      void refreshMarkets();
    });
  });
}

async function refreshMarketStatus(): Promise<void> {
  if (!market) return;
  const symbol = market.symbol;
  const view = await client.market(symbol);
  if (market?.symbol === symbol) $("market-status").textContent = view.status;
}

async function refreshAccount(): Promise<void> {
  if (!address || !market) return;
  const [balances, positions, open] = await Promise.all([
    client.balances(address),
    client.positions(address),
    client.orders(address, { open: true }),
  ]);
  rows(
    $("balances").querySelector("tbody")!,
    Object.entries(balances).map(([asset, b]) => {
      const decimals = assetDecimals[asset] ?? 0;
      return [asset, formatScaled(b.total, decimals), formatScaled(b.available, decimals), formatScaled(b.locked, decimals)];
    }),
  );
  rows($("positions").querySelector("tbody")!, positions.map((p) => [p.market, String(p.size), p.avgEntry, String(p.unrealizedPnl)]));
  rows($("open-orders").querySelector("tbody")!, open.map((o) => orderRow(o)));
}

function orderRow(order: Order): (string | Node)[] {
  const of = markets.find((m) => m.symbol === order.market);
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Cancel";
  button.dataset["cancel"] = order.clientOrderId;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const done = await client.cancel(order.market, order.clientOrderId);
      $("order-result").textContent = `cancelled ${done.clientOrderId}: ${done.status}`;
    } catch (error) {
      $("order-result").textContent = describe(error);
    }
    await refreshAccount();
  });
  return [
    order.clientOrderId,
    order.side,
    of ? formatScaled(order.price, of.priceScale) : String(order.price),
    of ? formatScaled(order.qty, of.qtyScale) : String(order.qty),
    of ? formatScaled(order.filled, of.qtyScale) : String(order.filled),
    order.status,
    button,
  ];
}

const assetDecimals: Record<string, number> = {};

async function placeOrder(event: Event): Promise<void> {
  event.preventDefault();
  const result = $("order-result");
  if (!market) return;
  if (!client.signer) {
    result.textContent = "generate, paste or connect a key first";
    return;
  }
  try {
    const type = $<HTMLSelectElement>("order-type").value as "LIMIT" | "MARKET";
    const price = type === "MARKET" ? 0n : parseScaled($<HTMLInputElement>("order-price").value, market.priceScale);
    const qty = parseScaled($<HTMLInputElement>("order-qty").value, market.qtyScale);
    const order = await client.placeOrder(
      {
        market: market.symbol,
        side: $<HTMLSelectElement>("order-side").value as "BUY" | "SELL",
        type,
        price,
        qty,
        timeInForce: $<HTMLSelectElement>("order-tif").value as "GTC",
      },
      true,
    );
    result.textContent = `${order.clientOrderId}: ${order.status}${order.reason ? ` (${order.reason})` : ""}`;
  } catch (error) {
    result.textContent = describe(error);
  }
  await refreshAccount();
}

// -- the operator view --------------------------------------------------------------------------
let operatorTimer: ReturnType<typeof setInterval> | undefined;

async function refreshOperator(): Promise<void> {
  if (!admin.adminToken) return;
  try {
    const health = await admin.marketHealth();
    rows(
      $("health").querySelector("tbody")!,
      health.map((row) => {
        const button = document.createElement("button");
        button.type = "button";
        const halted = row.status === "HALTED";
        button.textContent = halted ? "Resume" : "Halt";
        button.dataset["market"] = row.market;
        button.dataset["action"] = halted ? "resume" : "halt";
        button.disabled = row.status === "EXPIRED";
        button.addEventListener("click", async () => {
          button.disabled = true;
          try {
            const view = halted ? await admin.resume(row.market) : await admin.halt(row.market);
            $("admin-result").textContent = `${view.symbol}: ${view.status}`;
          } catch (error) {
            $("admin-result").textContent = describe(error);
          }
          await refreshOperator();
        });
        const status = document.createElement("span");
        status.textContent = row.status;
        status.dataset["status"] = row.market;
        return [row.market, status, String(row.backlog), String(row.unsettledEvents), String(row.settlementLagMs), button];
      }),
    );
  } catch (error) {
    $("admin-result").textContent = describe(error);
  }
}

async function runAudit(): Promise<void> {
  const target = $("audit");
  target.textContent = "auditing…";
  try {
    const report = await admin.audit();
    const broken = Object.entries(report.invariants).filter(([, check]) => !check.ok);
    target.className = report.ok ? "ok" : "bad";
    target.textContent = report.ok
      ? `OK: every invariant holds (${Object.keys(report.invariants).length} checked)`
      : `BROKEN: ${broken.map(([name, check]) => `${name} (${(check.problems ?? []).join("; ")})`).join(", ")}`;
    if (report.warnings.length) target.textContent += ` — warnings: ${report.warnings.join("; ")}`;
  } catch (error) {
    target.className = "bad";
    target.textContent = describe(error);
  }
}

function showTab(name: "trade" | "operator"): void {
  $("trade-view").hidden = name !== "trade";
  $("operator-view").hidden = name !== "operator";
  $("tab-trade").classList.toggle("active", name === "trade");
  $("tab-operator").classList.toggle("active", name === "operator");
}

// -- start ----------------------------------------------------------------------------------------
async function start(): Promise<void> {
  const [info, config] = await Promise.all([
    client.getInfo(),
    fetch("config.json").then((r) => r.json() as Promise<Config>),
  ]);
  for (const [name, asset] of Object.entries(info.assets)) assetDecimals[name] = asset.decimals;
  markets = info.markets;
  const override = new URLSearchParams(location.search).get("ws");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  stream = new Stream({
    url: override ?? `${scheme}://${location.hostname}:${config.broadcasterPort}/ws`,
    onState: (state, detail) => ($("feed").textContent = `feed: ${state}${detail ? ` ${detail}` : ""}`),
  }).start();

  const select = $<HTMLSelectElement>("market");
  select.replaceChildren(...markets.map((m) => new Option(`${m.symbol} (${m.product})`, m.symbol)));
  select.addEventListener("change", () => selectMarket(select.value));

  chart = createChart($("chart"), {
    autoSize: true,
    layout: { background: { color: "#1d2026" }, textColor: "#c0c4cc" },
    grid: { vertLines: { color: "#2a2e36" }, horzLines: { color: "#2a2e36" } },
    timeScale: { timeVisible: true },
  });
  candles = chart.addSeries(CandlestickSeries, {});

  $("key-generate").addEventListener("click", () => {
    const wallet = Wallet.createRandom();
    $<HTMLInputElement>("key-input").value = "";
    void useSigner(wallet as unknown as TypedDataSigner);
  });
  $("key-use").addEventListener("click", () => {
    const input = $<HTMLInputElement>("key-input");
    try {
      const wallet = new Wallet(input.value.trim());
      input.value = "";
      void useSigner(wallet as unknown as TypedDataSigner);
    } catch (error) {
      $("order-result").textContent = `not a private key: ${describe(error)}`;
    }
  });
  const injected = (window as { ethereum?: unknown }).ethereum;
  if (injected) {
    $("wallet-connect").hidden = false;
    $("wallet-connect").addEventListener("click", async () => {
      const signer = await new BrowserProvider(injected as never).getSigner();
      await useSigner(signer as unknown as TypedDataSigner);
    });
  }
  $("order-form").addEventListener("submit", (event) => void placeOrder(event));
  $("tab-trade").addEventListener("click", () => showTab("trade"));
  $("tab-operator").addEventListener("click", () => showTab("operator"));
  $("admin-connect").addEventListener("click", () => {
    const input = $<HTMLInputElement>("admin-token");
    admin.adminToken = input.value.trim() || undefined;
    input.value = "";
    $("admin-result").textContent = admin.adminToken ? "token set (kept in memory only)" : "no token";
    if (operatorTimer) clearInterval(operatorTimer);
    operatorTimer = setInterval(() => void refreshOperator(), 2000);
    void refreshOperator();
    void runAudit();
  });
  $("audit-run").addEventListener("click", () => void runAudit());
  setInterval(() => {
    void refreshAccount();
    void refreshMarketStatus();
    void refreshMarkets();
  }, 3000);
  void refreshMarkets();
  selectMarket(markets[0]!.symbol);
  document.body.dataset["ready"] = "1";
}

void start();
