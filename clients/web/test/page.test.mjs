// The web page in Debian's Chromium (playwright-core, no downloaded browser), against the real
// exchange tests/clients/test_web_page.py starts: DEX_GATEWAY_URL, DEX_BROADCASTER_URL,
// DEX_ADMIN_TOKEN, DEX_CHROMIUM (the browser), DEX_SCREENSHOT_DIR (where the screenshots go).
import { strict as assert } from "node:assert";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Wallet } from "ethers";
import { chromium } from "playwright-core";

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through tests/clients/test_web_page.py, which starts the exchange`);
  return value;
}

const GATEWAY = env("DEX_GATEWAY_URL");
const BROADCASTER = env("DEX_BROADCASTER_URL");
const TOKEN = env("DEX_ADMIN_TOKEN");
const SHOTS = process.env.DEX_SCREENSHOT_DIR || mkdtempSync(join(tmpdir(), "dex-web-"));
const MARKET = "BTC-USDC";

let browser;
let page;
const requested = [];
const pageErrors = [];

before(async () => {
  // A fresh profile each run (launchPersistentContext is how playwright takes --user-data-dir).
  browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "dex-chromium-")), {
    executablePath: process.env.DEX_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1400, height: 1000 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  page = browser.pages()[0] ?? (await browser.newPage());
  page.on("request", (request) => requested.push(request.url()));
  page.on("websocket", (socket) => requested.push(socket.url()));
  page.on("pageerror", (error) => pageErrors.push(error.message));
  await page.goto(`${GATEWAY}/app/`);
  await page.waitForSelector("body[data-ready='1']", { timeout: 20_000 });
});

after(async () => {
  await browser?.close();
});

async function admin(method, path, body) {
  const response = await fetch(GATEWAY + path, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

test("an order placed through the form shows in the ladder and in open orders, and its cancel removes it", async () => {
  await page.click("#key-generate");
  await page.waitForFunction(() => /^0x[0-9a-fA-F]{40}$/.test(document.getElementById("address").textContent));
  const address = await page.textContent("#address");
  await admin("POST", "/v1/admin/deposits", { userId: address, asset: "USDC", amount: "100000000000" });
  await page.locator(`#markets tr[data-market='${MARKET}']`).click();
  assert.equal(await page.inputValue("#market"), MARKET);
  await page.waitForFunction(() => /^seq \d+$/.test(document.getElementById("depth-seq").textContent), null, { timeout: 15_000 });

  await page.selectOption("#order-side", "BUY");
  await page.fill("#order-price", "29990.00");
  await page.fill("#order-qty", "0.1000");
  await page.selectOption("#order-tif", "GTC");
  await page.click("#order-submit");
  await page.waitForFunction(() => /: NEW$/.test(document.getElementById("order-result").textContent), null, { timeout: 15_000 });
  const clientOrderId = (await page.textContent("#order-result")).split(":")[0];

  const bid = page.locator("#bids tr", { hasText: "29990.00" });
  await bid.waitFor({ timeout: 15_000 });
  assert.equal(await bid.locator("td").nth(1).textContent(), "0.1000");
  const open = page.locator(`#open-orders button[data-cancel='${clientOrderId}']`);
  await open.waitFor({ timeout: 15_000 });
  // 2999000 × 1000 quote units locked, plus the 5 bps taker fee: 1,499,500 (to the unit).
  const locked = page.locator("#balances tr", { hasText: "USDC" }).locator("td").nth(3);
  await page.waitForFunction(() => document.querySelector("#balances tbody tr td:nth-child(4)")?.textContent === "3000.499500");
  assert.equal(await locked.textContent(), "3000.499500");
  const shot = join(SHOTS, "web-page.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);

  await open.click();
  await page.waitForFunction((id) => document.getElementById("order-result").textContent === `cancelled ${id}: CXL`, clientOrderId, { timeout: 15_000 });
  await bid.waitFor({ state: "detached", timeout: 15_000 });
  await open.waitFor({ state: "detached", timeout: 15_000 });
  const order = await (await fetch(`${GATEWAY}/v1/orders/${address}/${clientOrderId}`)).json();
  assert.deepEqual([order.status, order.reason, order.price, order.qty], ["CXL", "USER", 2999000, 1000]);
  // The release, settled: nothing locked, every unit available again.
  await page.waitForFunction(() => document.querySelector("#balances tbody tr td:nth-child(4)")?.textContent === "0.000000", null, { timeout: 15_000 });
  assert.equal(await page.textContent("#balances tbody tr td:nth-child(3)"), "100000.000000");
});

test("the operator view halts and resumes a market, shows backlogs and the auditor's verdict; the token stays out of every URL", async () => {
  await page.click("#tab-operator");
  await page.fill("#admin-token", TOKEN);
  await page.click("#admin-connect");
  const status = page.locator(`[data-status='${MARKET}']`);
  await page.waitForFunction((m) => document.querySelector(`[data-status='${m}']`)?.textContent === "OPEN", MARKET, { timeout: 15_000 });
  // The auditor reads the whole exchange at one moment; one taken while a fill or release is
  // still settling may say so, so its button runs it again until it answers OK (40 s at most).
  const deadline = Date.now() + 40_000;
  for (;;) {
    const verdict = await page.textContent("#audit");
    if (verdict.startsWith("OK")) break;
    assert.ok(Date.now() < deadline, `the auditor never said OK; its last verdict: ${verdict}`);
    if (!verdict.startsWith("auditing")) await page.click("#audit-run");
    await page.waitForTimeout(250);
  }

  await page.click(`button[data-market='${MARKET}'][data-action='halt']`);
  await page.waitForFunction((m) => document.querySelector(`[data-status='${m}']`)?.textContent === "HALTED", MARKET, { timeout: 15_000 });
  assert.equal((await (await fetch(`${GATEWAY}/v1/markets/${MARKET}`)).json()).status, "HALTED");
  const shot = join(SHOTS, "operator-view.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);

  await page.click(`button[data-market='${MARKET}'][data-action='resume']`);
  await page.waitForFunction((m) => document.querySelector(`[data-status='${m}']`)?.textContent === "OPEN", MARKET, { timeout: 15_000 });
  assert.equal((await (await fetch(`${GATEWAY}/v1/markets/${MARKET}`)).json()).status, "OPEN");
  assert.equal(await status.textContent(), "OPEN");
  assert.equal(await page.inputValue("#admin-token"), "");

  const origins = new Set(requested.map((url) => new URL(url).origin.replace(/^ws/, "http")));
  assert.deepEqual([...origins].sort(), [GATEWAY, BROADCASTER.replace(/^ws/, "http").replace(/\/ws$/, "")].sort());
  assert.ok(requested.every((url) => !url.includes(TOKEN)), "the admin token appeared in a URL");
});

test("with an injected wallet present, the page signs through it (eth_signTypedData_v4)", async () => {
  const wallet = Wallet.createRandom();
  await admin("POST", "/v1/admin/deposits", { userId: wallet.address, asset: "BTC", amount: "100000000" });
  const tab = await browser.newPage();
  tab.on("pageerror", (error) => pageErrors.push(error.message));
  const asked = [];
  // The wallet's side, in node: sign what the page hands to eth_signTypedData_v4.
  await tab.exposeFunction("walletSign", async (address, payload) => {
    assert.equal(address.toLowerCase(), wallet.address.toLowerCase());
    const { domain, types, message, primaryType } = JSON.parse(payload);
    asked.push(primaryType);
    delete types.EIP712Domain;
    return wallet.signTypedData(domain, types, message);
  });
  await tab.addInitScript((address) => {
    window.ethereum = {
      request: async ({ method, params }) => {
        if (method === "eth_requestAccounts" || method === "eth_accounts") return [address];
        if (method === "eth_chainId") return "0x1";
        if (method === "eth_signTypedData_v4") return window.walletSign(params[0], params[1]);
        throw Object.assign(new Error(`unsupported ${method}`), { code: 4200 });
      },
      on() {},
      removeListener() {},
    };
  }, wallet.address);
  await tab.goto(`${GATEWAY}/app/`);
  await tab.waitForSelector("body[data-ready='1']", { timeout: 20_000 });
  await tab.click("#wallet-connect");
  await tab.waitForFunction((a) => document.getElementById("address").textContent === a, wallet.address);
  await tab.selectOption("#order-side", "SELL");
  await tab.fill("#order-price", "31000.00");
  await tab.fill("#order-qty", "0.0500");
  await tab.click("#order-submit");
  await tab.waitForFunction(() => /: NEW$/.test(document.getElementById("order-result").textContent), null, { timeout: 15_000 });
  const clientOrderId = (await tab.textContent("#order-result")).split(":")[0];
  await tab.locator("#asks tr", { hasText: "31000.00" }).waitFor({ timeout: 15_000 });
  await tab.click(`#open-orders button[data-cancel='${clientOrderId}']`);
  await tab.waitForFunction((id) => document.getElementById("order-result").textContent === `cancelled ${id}: CXL`, clientOrderId, { timeout: 15_000 });
  assert.deepEqual(asked, ["OrderV2", "Cancel"]);
  const order = await (await fetch(`${GATEWAY}/v1/orders/${wallet.address}/${clientOrderId}`)).json();
  assert.deepEqual([order.side, order.price, order.qty, order.status], ["SELL", 3100000, 500, "CXL"]);
  await tab.close();
});

test("no script error happened on the page", () => {
  assert.deepEqual(pageErrors, []);
});
