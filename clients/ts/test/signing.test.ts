// Signing against the ethers vectors of tests/fixtures/ethers (no exchange needed).
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { test } from "node:test";
import { Wallet } from "ethers";
import { NESTED_TYPES, PRIMARY_TYPES, Signing, dexDomain, typesFor } from "../src/index.js";

const FIXTURES = resolve(process.cwd(), "../../tests/fixtures/ethers");
// The keys tests/fixtures/ethers/make_vectors.mjs signs with.
const KEYS = [
  "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
  "0x8da4ef21b864d2cc526dbdb2a120bd2874c36c9d0a1fb7f8c63d7f7a8b41de8f",
];

interface Vector {
  primaryType: string;
  address: string;
  message: Record<string, unknown>;
  sig: string;
}

// The types every vector file so far has held; a vector of a type not mirrored here is checked
// against the gateway's published types instead (test/exchange.test.ts).
const SIGNED_OFFLINE = ["Order", "OrderV2", "OrderV3", "Cancel", "CancelAll", "Withdraw", "ApproveAgent", "RevokeAgent", "ScheduleCancel", "CancelReplace", "Amend", "Batch"];

test("every ethers vector of a mirrored type is signed to the same signature", async () => {
  const { vectors } = JSON.parse(readFileSync(resolve(FIXTURES, "vectors.json"), "utf8")) as { vectors: Vector[] };
  const wallets = new Map(KEYS.map((key) => [new Wallet(key).address, new Wallet(key)]));
  const signing = new Signing(dexDomain(1));
  const seen = new Set<string>();
  for (const vector of vectors) {
    if (!(vector.primaryType in PRIMARY_TYPES || vector.primaryType in NESTED_TYPES)) continue;
    const wallet = wallets.get(vector.address);
    assert.ok(wallet, `no key for ${vector.address}`);
    const body = await signing.sign(wallet, vector.primaryType, vector.message);
    assert.equal(body["sig"], vector.sig, `${vector.primaryType} of ${vector.address}`);
    seen.add(vector.primaryType);
  }
  for (const primary of SIGNED_OFFLINE) assert.ok(seen.has(primary), `no vector for ${primary}`);
});

test("a nested type is signed with its member struct beside it, and an unknown type is refused", () => {
  const all = { ...PRIMARY_TYPES, ...NESTED_TYPES };
  assert.deepEqual(Object.keys(typesFor("Batch", all)), ["Batch", "BatchAction"]);
  assert.deepEqual(Object.keys(typesFor("Cancel", all)), ["Cancel"]);
  assert.throws(() => typesFor("OrderV9", all), /unknown EIP-712 type "OrderV9"/);
});

test("a body is the type's fields in order plus sig, bigints as decimal strings", async () => {
  const wallet = new Wallet(KEYS[0]!);
  const body = await new Signing().sign(wallet, "Withdraw", {
    ts: 1764590000003,
    amount: 10n ** 30n,
    asset: "USDC",
    userId: wallet.address,
    extra: "dropped",
  });
  assert.deepEqual(Object.keys(body), ["userId", "asset", "amount", "ts", "sig"]);
  assert.equal(body["amount"], "1000000000000000000000000000000");
  await assert.rejects(new Signing().sign(wallet, "Cancel", { userId: wallet.address }), /Cancel needs market, clientOrderId, ts/);
});
