// The SDK against the real exchange processes that tests/clients/test_ts_sdk.py starts on a real
// redis-server. Its environment names them: DEX_GATEWAY_URL, DEX_BROADCASTER_URL,
// DEX_ADMIN_TOKEN, and DEX_TEST_CONTROL_URL (POST /restart-broadcaster: kill -9, start again).
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { after, before, test } from "node:test";
import { Wallet } from "ethers";
import {
  BadRequestError,
  BookSync,
  ConflictError,
  DexClient,
  ForbiddenError,
  NESTED_TYPES,
  NotFoundError,
  OrderEntry,
  PRIMARY_TYPES,
  RefusedError,
  SignatureRefusedError,
  Signing,
  Stream,
  newClientOrderId,
  typesFor,
  type BatchAction,
  type Depth,
  type Order,
  type Twap,
} from "../src/index.js";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/clients/test_ts_sdk.py, which starts the exchange`);
  return value;
}

const GATEWAY = env("DEX_GATEWAY_URL");
const BROADCASTER = env("DEX_BROADCASTER_URL");
const ADMIN_TOKEN = env("DEX_ADMIN_TOKEN");
const CONTROL = env("DEX_TEST_CONTROL_URL");
const SPOT = "BTC-USDC";
const PRICE = 3_000_000;

// The keys and types tests/fixtures/ethers/make_vectors.mjs signs with (signing.test.ts too).
const VECTOR_KEYS = [
  "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
  "0x8da4ef21b864d2cc526dbdb2a120bd2874c36c9d0a1fb7f8c63d7f7a8b41de8f",
];
const SIGNED_OFFLINE = ["Order", "OrderV2", "OrderV3", "Cancel", "CancelAll", "Withdraw", "ApproveAgent", "RevokeAgent", "ScheduleCancel", "CancelReplace", "Amend", "Batch"];

const admin = new DexClient({ baseUrl: GATEWAY, adminToken: ADMIN_TOKEN });

async function trader(): Promise<{ wallet: Wallet; client: DexClient }> {
  const wallet = Wallet.createRandom() as unknown as Wallet;
  await admin.deposit(wallet.address, "USDC", 100_000_000_000_000n);
  await admin.deposit(wallet.address, "BTC", 100_000_000_000n);
  return { wallet, client: new DexClient({ baseUrl: GATEWAY, signer: wallet }) };
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((done) => setTimeout(done, 50));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
}

async function rejectsWith(promise: Promise<unknown>, Kind: new (...args: never[]) => Error, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof Kind, `expected ${Kind.name}, got ${String(error)}`);
    assert.equal((error as unknown as { code: string }).code, code);
    return true;
  });
}

let stream: Stream;
before(() => {
  stream = new Stream({ url: BROADCASTER, backoffMs: 100, maxBackoffMs: 1000 }).start();
});
after(() => stream.stop());

test("the SDK's type mirror equals what the gateway publishes, and every ethers vector signs from the published types", async () => {
  const info = await admin.getInfo();
  const mirror: Record<string, unknown> = { ...PRIMARY_TYPES, ...NESTED_TYPES };
  const published = Object.keys(info.types).filter((name) => name !== "EIP712Domain");
  for (const name of published) {
    if (name in mirror) assert.deepEqual(info.types[name], mirror[name], name);
    assert.ok(typesFor(name, info.types)[name]);
  }
  for (const name of SIGNED_OFFLINE) assert.ok(published.includes(name), name);
  // Every vector, of whatever type the gateway publishes (one a newer branch added included).
  const { vectors } = JSON.parse(readFileSync(resolve(process.cwd(), "../../tests/fixtures/ethers/vectors.json"), "utf8")) as {
    vectors: { primaryType: string; address: string; message: Record<string, unknown>; sig: string }[];
  };
  const signing = new Signing(info.domain, info.types);
  const wallets = new Map(VECTOR_KEYS.map((key) => [new Wallet(key).address, new Wallet(key)]));
  for (const vector of vectors) {
    const body = await signing.sign(wallets.get(vector.address)!, vector.primaryType, vector.message);
    assert.equal(body["sig"], vector.sig, `${vector.primaryType} of ${vector.address}`);
  }
  assert.deepEqual(info.domain, { name: "OrderBookDEX", version: "1", chainId: 1, verifyingContract: "0x0000000000000000000000000000000000000000" });
});

test("sign and place, read the order back, cancel it: the reservation returns to the unit", async () => {
  const { wallet, client } = await trader();
  const me = wallet.address;
  const placed = await client.placeOrder({ market: SPOT, side: "BUY", price: PRICE - 1000, qty: 1000, timeInForce: "GTC" }, true);
  assert.equal(placed.status, "NEW");
  const notional = BigInt(PRICE - 1000) * 1000n;
  const fee = (notional * 5n + 9999n) / 10000n;
  const held = (await client.balances(me))["USDC"]!;
  assert.deepEqual(held, { total: "100000000000000", available: String(100_000_000_000_000n - notional - fee), locked: String(notional + fee) });
  assert.equal((await client.order(me, placed.clientOrderId)).status, "NEW");
  assert.deepEqual((await client.orders(me, { market: SPOT, open: true })).map((o) => o.clientOrderId), [placed.clientOrderId]);

  const cancelled = await client.cancel(SPOT, placed.clientOrderId);
  assert.equal(cancelled.status, "CXL");
  assert.equal(cancelled.reason, "USER");
  await until("the release", async () => (await client.balances(me))["USDC"]!.locked === "0");
  assert.deepEqual((await client.balances(me))["USDC"], { total: "100000000000000", available: "100000000000000", locked: "0" });
  await rejectsWith(client.cancel(SPOT, placed.clientOrderId), ConflictError, "ORDER_CLOSED");
});

test("every endpoint reads through the SDK, and refusals arrive as typed errors", async () => {
  const maker = await trader();
  const taker = await trader();
  const m = maker.wallet.address;
  const t = taker.wallet.address;

  // A trade, so trades, ticker, candles and fills have something to show.
  const ask = await maker.client.placeOrder({ market: SPOT, side: "SELL", price: PRICE, qty: 500 }, true);
  const bid = await taker.client.placeOrder({ market: SPOT, side: "BUY", price: PRICE, qty: 200, timeInForce: "IOC" }, true);
  assert.equal(bid.status, "FILLED");
  assert.equal((await admin.health()).status, "ok");
  assert.ok((await admin.markets()).some((market) => market.symbol === SPOT));
  assert.equal((await admin.market(SPOT)).status, "OPEN");
  const trades = await admin.trades(SPOT, 5);
  assert.equal(trades[0]!.buyOid, bid.clientOrderId);
  assert.equal(trades[0]!.qty, 200);
  assert.equal((await admin.ticker(SPOT)).last, PRICE);
  const candles = await admin.candles(SPOT, "1m", 10);
  assert.ok(candles.length >= 1 && candles.at(-1)!.c === PRICE);
  const depth = await admin.depth(SPOT, 10);
  assert.ok(depth.asks.some(([price, qty]) => price === PRICE && qty >= 300));
  await until("the fills", async () => (await taker.client.fills(t, { market: SPOT })).length === 1);
  const [fill] = await taker.client.fills(t, { market: SPOT });
  assert.deepEqual([fill!.side, fill!.qty, fill!.liquidity, fill!.fee], ["BUY", 200, "TAKER", String((BigInt(PRICE) * 200n * 5n + 9999n) / 10000n)]);
  assert.deepEqual(await taker.client.positions(t), []);
  assert.equal(typeof (await taker.client.margin(t)), "object");
  assert.ok("fees" in (await admin.systemAccounts()));
  assert.match(await admin.metrics(), /dex_gateway_requests_total/);

  // amend, cancel-replace, batch, cancel-all.
  const amended = await maker.client.amend(SPOT, ask.clientOrderId, PRICE + 10, 400);
  assert.deepEqual([amended.price, amended.qty, amended.filled], [PRICE + 10, 400, 200]);
  const replaced = await maker.client.cancelReplace(ask.clientOrderId, { market: SPOT, side: "SELL", price: PRICE + 20, qty: 100 });
  assert.equal(replaced.cancelled?.reason, "REPLACED");
  assert.equal(replaced.order.status, "NEW");
  const b1 = newClientOrderId("b");
  const batch = await maker.client.batch(
    [
      { kind: "PLACE", market: SPOT, clientOrderId: b1, side: "SELL", type: "LIMIT", price: PRICE + 30, qty: 10, timeInForce: "GTC" },
      { kind: "AMEND", market: SPOT, clientOrderId: b1, price: PRICE + 40, qty: 10, expectedFilled: -1 },
    ],
    true,
  );
  assert.ok(batch);
  await until("the batch's order", async () => (await maker.client.order(m, b1)).price === PRICE + 40);
  const { cancelled } = await maker.client.cancelAll(SPOT);
  assert.equal(cancelled, 2);

  // withdrawals, agents, the dead-man's switch.
  const withdrawal = await taker.client.withdraw("USDC", 1_000_000n);
  assert.equal(withdrawal.status, "PENDING");
  assert.equal((await taker.client.withdrawals(t))[0]!.amount, "1000000");
  const agent = Wallet.createRandom();
  const approved = await taker.client.approveAgent(agent.address, { name: "bot", scope: "CANCEL_ONLY", markets: SPOT });
  assert.equal(approved.agent, agent.address.toLowerCase());
  assert.deepEqual((await taker.client.agents(t)).map((a) => a.scope), ["CANCEL_ONLY"]);
  assert.deepEqual(await taker.client.revokeAgent(agent.address), { agent: agent.address.toLowerCase(), revoked: true });
  const deadline = Date.now() + 60_000;
  assert.equal((await taker.client.scheduleCancel(deadline)).deadline, deadline);
  assert.deepEqual((await taker.client.scheduledCancels(t)).map((s) => s.deadline), [deadline]);
  assert.equal((await taker.client.scheduleCancel(0)).deadline, 0);

  // admin reads.
  // The auditor reads the exchange at one moment: a release still settling may show; ask again.
  let report = await admin.audit();
  await until("the auditor's OK", async () => (report = await admin.audit()).ok).catch(() => {
    assert.fail(`the auditor never said OK: ${JSON.stringify(report.invariants)}`);
  });
  const health = await admin.marketHealth();
  const row = health.find((r) => r.market === SPOT)!;
  assert.deepEqual([row.status, row.backlog], ["OPEN", 0]);

  assert.equal((await admin.setMarketStatus("ETH-USDC", "CANCEL_ONLY")).status, "CANCEL_ONLY");
  await rejectsWith(taker.client.placeOrder({ market: "ETH-USDC", side: "BUY", price: 300000, qty: 10 }), RefusedError, "MARKET_CANCEL_ONLY");
  assert.equal((await admin.resume("ETH-USDC")).status, "OPEN");
  assert.ok(await admin.pushOracle("BTC-PERP", 3_100_000));
  const depositId = newClientOrderId("dep");
  assert.deepEqual(await admin.deposit(t, "ETH", 10n ** 18n, depositId), { total: "1000000000000000000", available: "1000000000000000000", locked: "0" });
  await rejectsWith(admin.deposit(t, "ETH", 10n ** 18n, depositId), ConflictError, "DUPLICATE");

  // typed refusals, each changing nothing.
  await rejectsWith(admin.depth("NOPE-USDC"), NotFoundError, "UNKNOWN_MARKET");
  await rejectsWith(admin.trades(SPOT, 0), BadRequestError, "INVALID_REQUEST");
  await rejectsWith(new DexClient({ baseUrl: GATEWAY, adminToken: "wrong" }).audit(), ForbiddenError, "FORBIDDEN");
  const body = await taker.client.orderBody({ market: SPOT, side: "BUY", price: 1, qty: 1 });
  await taker.client.postOrder(body);
  await rejectsWith(taker.client.postOrder(body), ConflictError, "DUPLICATE");
  await until("the order to rest", async () => (await taker.client.order(t, String(body["clientOrderId"]))).status === "NEW");
  assert.equal((await taker.client.cancel(SPOT, String(body["clientOrderId"]))).status, "CXL");
  await rejectsWith(taker.client.postOrder({ ...body, clientOrderId: "forged" }), SignatureRefusedError, "INVALID_SIGNATURE");
  await rejectsWith(
    taker.client.placeOrder({ market: SPOT, side: "BUY", price: PRICE, qty: 100_000_000 }),
    RefusedError,
    "INSUFFICIENT_BALANCE",
  );
});

test("WebSocket order entry places, refuses a replay, cancels, and cancels on disconnect", async () => {
  const { wallet, client } = await trader();
  const entry = new OrderEntry(`${GATEWAY.replace(/^http/, "ws")}/v1/ws`, client);
  const body = await client.orderBody({ market: SPOT, side: "SELL", price: PRICE + 5000, qty: 100, timeInForce: "GTC" });
  const placed = (await entry.send("order", body, { wait: true })) as Order;
  assert.equal(placed.status, "NEW");
  await rejectsWith(entry.send("order", body), ConflictError, "DUPLICATE");
  await rejectsWith(client.postOrder(body), ConflictError, "DUPLICATE");
  assert.equal((await entry.cancel(SPOT, placed.clientOrderId)).status, "CXL");

  assert.deepEqual(await entry.session(true), { cancelOnDisconnect: true });
  const resting = (await entry.placeOrder({ market: SPOT, side: "SELL", price: PRICE + 6000, qty: 100 }, true)) as Order;
  assert.equal(resting.status, "NEW");
  entry.close();
  const gone = await until("the cancel on disconnect", async () => {
    const order = await client.order(wallet.address, resting.clientOrderId);
    return order.status === "CXL" ? order : undefined;
  });
  assert.equal(gone.reason, "DISCONNECT");
});

test("a stop waits UNTRIGGERED holding its reservation, leverage moves the next reservation, TWAPs and health read", async () => {
  const { wallet, client } = await trader();
  const me = wallet.address;
  const total = 100_000_000_000_000n;
  // A spot BUY STOP_LIMIT far above any price here: notional + taker fee at its limit price.
  const price = 3_910_000;
  const stop = await client.placeStop({ market: SPOT, side: "BUY", price, qty: 1000, triggerPrice: 3_900_000 });
  assert.deepEqual(
    [stop.type, stop.status, stop.triggerPrice, stop.triggerSource, stop.triggered],
    ["STOP_LIMIT", "UNTRIGGERED", 3_900_000, "LAST", false],
  );
  const notional = BigInt(price) * 1000n;
  const reserved = notional + (notional * 5n + 9999n) / 10000n;
  assert.deepEqual((await client.balances(me))["USDC"], { total: String(total), available: String(total - reserved), locked: String(reserved) });
  assert.equal((await client.cancel(SPOT, stop.clientOrderId)).status, "CXL");
  await until("the release", async () => (await client.balances(me))["USDC"]!.locked === "0");

  // Leverage: a PERP bid below the index reserves 10 % + fee, then 20 % + fee once chosen.
  await admin.pushOracle("BTC-PERP", PRICE);
  const bid = PRICE - 10_000;
  const perpNotional = BigInt(bid) * 1000n;
  const perpFee = (perpNotional * 5n + 9999n) / 10000n;
  assert.deepEqual((await client.leverage(me)).find((l) => l.market === "BTC-PERP"), {
    userId: me.toLowerCase(), market: "BTC-PERP", initialMarginBps: 1000, leverage: "10", chosen: false,
  });
  await client.placeOrder({ market: "BTC-PERP", side: "BUY", price: bid, qty: 1000 }, true);
  const first = perpNotional / 10n + perpFee;
  await until("the first reservation", async () => (await client.balances(me))["USDC"]!.locked === String(first));
  const chosen = await client.setLeverage("BTC-PERP", 2000);
  assert.deepEqual([chosen.initialMarginBps, chosen.leverage, chosen.chosen], [2000, "5", true]);
  await rejectsWith(client.setLeverage("BTC-PERP", 500), BadRequestError, "INVALID_REQUEST");
  await client.placeOrder({ market: "BTC-PERP", side: "BUY", price: bid, qty: 1000 }, true);
  assert.equal((await client.balances(me))["USDC"]!.locked, String(first + perpNotional / 5n + perpFee));
  assert.equal((await client.cancelAll("BTC-PERP")).cancelled, 2);

  // A TWAP of an hour: placed, read, cancelled; and one over the WebSocket with set_leverage.
  const twap = await client.placeTwap({ market: SPOT, side: "BUY", qty: 10_000, durationMinutes: 60 });
  assert.deepEqual([twap.type, twap.status, twap.slicesTotal, twap.qty], ["TWAP", "ACTIVE", 120, 10_000]);
  assert.equal((await client.twap(me, twap.clientOrderId)).clientOrderId, twap.clientOrderId);
  const entry = new OrderEntry(`${GATEWAY.replace(/^http/, "ws")}/v1/ws`, client);
  const viaWs: Twap = await entry.placeTwap({ market: SPOT, side: "BUY", qty: 10_000, durationMinutes: 60, clientOrderId: `ws-${twap.clientOrderId}` });
  assert.equal(viaWs.status, "ACTIVE");
  assert.equal((await entry.setLeverage("BTC-PERP", 0)).chosen, false);
  entry.close();
  assert.deepEqual((await client.twaps(me)).map((t) => t.clientOrderId), [twap.clientOrderId, viaWs.clientOrderId]);
  for (const id of [twap.clientOrderId, viaWs.clientOrderId]) {
    const ended = await client.cancelTwap(SPOT, id);
    assert.deepEqual([ended.status, ended.reason, ended.nextSliceAt], ["CXL", "USER", null]);
  }
  assert.deepEqual(await client.twaps(me), []);
  await rejectsWith(client.twap(me, "no-such-twap"), NotFoundError, "NOT_FOUND");

  const health = await admin.marketHealth();
  assert.deepEqual(health.map((h) => h.market), (await admin.markets()).map((m) => m.symbol));
  assert.ok(health.every((h) => Number.isInteger(h.backlog) && h.settlementLagMs >= 0));
});

test("a synced book follows 1,000 random orders across a broadcaster kill -9 and ends equal to REST depth", async () => {
  const traders = await Promise.all([0, 1, 2, 3].map(() => trader()));
  const sync = new BookSync(stream, SPOT);
  await until("the first snapshot", async () => sync.synced);
  let random = 17;
  const next = (n: number): number => {
    random = (random * 1103515245 + 12345) % 2147483648;
    return random % n;
  };
  // 1,000 orders in 20 signed batches of 50 (one signature each: signing is the client's cost),
  // 6 in flight at once from 4 accounts; the broadcaster is killed after the 8th batch.
  const batches = Array.from({ length: 20 }, (_, b) => ({
    who: traders[b % traders.length]!,
    actions: Array.from({ length: 50 }, (): BatchAction => ({
      kind: "PLACE",
      market: SPOT,
      clientOrderId: newClientOrderId("r"),
      side: next(2) === 0 ? "BUY" : "SELL",
      type: "LIMIT",
      price: PRICE + (next(41) - 20) * 100,
      qty: (1 + next(20)) * 10,
      timeInForce: next(5) === 0 ? "IOC" : "GTC",
    })),
  }));
  let sent = 0;
  let restarted = false;
  const worker = async (): Promise<void> => {
    while (sent < batches.length) {
      const batch = batches[sent++]!;
      if (sent === 9 && !restarted) {
        restarted = true;
        const answer = await fetch(`${CONTROL}/restart-broadcaster`, { method: "POST" });
        assert.equal(answer.status, 200);
      }
      const result = (await batch.who.client.batch(batch.actions)) as { results: { status: number }[] };
      assert.deepEqual(new Set(result.results.map((r) => r.status)), new Set([202]));
    }
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: 6 }, worker));
  const sending = Date.now() - started;
  assert.ok(restarted);

  let seen = "";
  const rest = await until("the local book to equal REST depth", async () => {
    const depth: Depth = await admin.depth(SPOT, 1000);
    const local = JSON.stringify({ bids: sync.book.levels("bids"), asks: sync.book.levels("asks") });
    const remote = JSON.stringify({ bids: depth.bids, asks: depth.asks });
    seen = `synced ${sync.synced}, local seq ${sync.book.seq}, REST seq ${depth.seq}, ${JSON.stringify(sync.stats)}, ${stream.connections} connections, open ${stream.open}; levels equal: ${local === remote}`;
    return sync.synced && depth.seq === sync.book.seq && local === remote ? depth : undefined;
  }, 20_000).catch((error: Error) => {
    throw new Error(`${error.message} (${seen})`);
  });
  assert.ok(rest.seq > 500, `seq ${rest.seq}`);
  assert.ok(stream.connections >= 2, "the stream reconnected after the kill");
  assert.ok(sync.stats.snapshots >= 2);
  console.log(`1,000 orders sent in ${sending} ms, synced ${Date.now() - started - sending} ms later; book synced at seq ${rest.seq}: ${sync.stats.updates} updates, ${sync.stats.snapshots} snapshots, ${sync.stats.gaps} gaps, ${stream.connections} connections`);
  const open: Order[] = (await Promise.all(traders.map((t) => t.client.orders(t.wallet.address, { market: SPOT, open: true, limit: 1000 })))).flat();
  const restingQty = open.filter((o) => o.status !== "ACCEPTED").reduce((sum, o) => sum + o.qty - o.filled, 0);
  const bookQty = [...rest.bids, ...rest.asks].reduce((sum, [, qty]) => sum + qty, 0);
  assert.equal(bookQty, restingQty);
  sync.close();
});
