/**
 * EIP-712 signing of every primary type the gateway verifies (API.md §4, docs/api.md).
 *
 * The exchange publishes its domain and types in `GET /v1/info`; {@link Signing} signs from
 * that published list, so a type added to the exchange signs here without a new release.
 * {@link PRIMARY_TYPES} and {@link NESTED_TYPES} mirror `common/eip712.py` for offline use
 * (a test holds each equal to the gateway's where both have it: a type may land on either side
 * first, and what the gateway publishes is what is signed). A type whose field names another
 * struct (`Batch` holds `BatchAction[]`) is signed with that struct beside it, as ethers
 * `signTypedData` wants.
 *
 * A signer that holds its key here (an ethers `Wallet`: it has a `signingKey`) is signed for
 * without going through `signTypedData`: the domain separator and each type's encoder are
 * built once and the digest signed directly, the same signature several times faster (the
 * vectors test holds the two equal). Any other signer (an injected wallet) gets `signTypedData`.
 */
import { TypedDataEncoder, concat, keccak256, type SigningKey } from "ethers";

export interface TypedField {
  name: string;
  type: string;
}

export type Types = Record<string, TypedField[]>;

export interface Domain {
  name: string;
  version: string;
  chainId: number | bigint;
  verifyingContract: string;
}

/** What signs: an ethers `Wallet`, or the `JsonRpcSigner` of an injected browser wallet. */
export interface TypedDataSigner {
  getAddress(): Promise<string>;
  signTypedData(domain: Domain, types: Types, value: Record<string, unknown>): Promise<string>;
}

/** An integer on the wire: a JSON number (below 2^53), a decimal-digit string or a bigint. */
export type Int = number | bigint | string;

const f = (name: string, type: string): TypedField => ({ name, type });

const ORDER: TypedField[] = [
  f("clientOrderId", "string"),
  f("userId", "string"),
  f("market", "string"),
  f("side", "string"),
  f("type", "string"),
  f("price", "uint256"),
  f("qty", "uint256"),
  f("product", "string"),
  f("ts", "uint256"),
];
const V2: TypedField[] = [f("timeInForce", "string"), f("reduceOnly", "bool"), f("expiresAt", "uint256")];

/** Mirror of `common/eip712.py` PRIMARY_TYPES (flat types), in its order. */
export const PRIMARY_TYPES: Types = {
  Order: ORDER,
  OrderV2: [...ORDER, ...V2],
  Cancel: [f("userId", "string"), f("market", "string"), f("clientOrderId", "string"), f("ts", "uint256")],
  CancelAll: [f("userId", "string"), f("market", "string"), f("ts", "uint256")],
  Withdraw: [f("userId", "string"), f("asset", "string"), f("amount", "uint256"), f("ts", "uint256")],
  ApproveAgent: [
    f("userId", "string"),
    f("agent", "string"),
    f("name", "string"),
    f("scope", "string"),
    f("markets", "string"),
    f("expiresAt", "uint256"),
    f("ts", "uint256"),
  ],
  RevokeAgent: [f("userId", "string"), f("agent", "string"), f("ts", "uint256")],
  ScheduleCancel: [f("userId", "string"), f("market", "string"), f("deadline", "uint256"), f("ts", "uint256")],
  CancelReplace: [...ORDER, ...V2, f("cancelClientOrderId", "string")],
  Amend: [
    f("userId", "string"),
    f("market", "string"),
    f("clientOrderId", "string"),
    f("price", "uint256"),
    f("qty", "uint256"),
    f("expectedFilled", "int256"),
    f("ts", "uint256"),
  ],
  OrderV3: [...ORDER, ...V2, f("selfTradePrevention", "string")],
  SetLeverage: [f("userId", "string"), f("market", "string"), f("initialMarginBps", "uint256"), f("ts", "uint256")],
};

/** Mirror of `common/eip712.py` NESTED_TYPES: a primary type with one level of nesting, and its member. */
export const NESTED_TYPES: Types = {
  Batch: [f("userId", "string"), f("atomic", "bool"), f("actions", "BatchAction[]"), f("ts", "uint256")],
  BatchAction: [
    f("kind", "string"),
    f("market", "string"),
    f("clientOrderId", "string"),
    f("side", "string"),
    f("type", "string"),
    f("price", "uint256"),
    f("qty", "uint256"),
    f("timeInForce", "string"),
    f("reduceOnly", "bool"),
    f("expiresAt", "uint256"),
    f("expectedFilled", "int256"),
  ],
};

/** The exchange's domain for a chain id and contract (API.md §4). */
export function dexDomain(chainId: number | bigint = 1, verifyingContract = "0x0000000000000000000000000000000000000000"): Domain {
  return { name: "OrderBookDEX", version: "1", chainId, verifyingContract };
}

/** `primary` and every struct it names, from `types` (for ethers `signTypedData`). */
export function typesFor(primary: string, types: Types): Types {
  const chosen: Types = {};
  const visit = (name: string): void => {
    if (chosen[name] !== undefined) return;
    const fields = types[name];
    if (fields === undefined) throw new Error(`unknown EIP-712 type ${JSON.stringify(name)}; the exchange publishes ${Object.keys(types).join(", ")}`);
    chosen[name] = fields;
    for (const field of fields) {
      const base = field.type.replace(/\[\d*\]$/, "");
      if (types[base] !== undefined && base !== "EIP712Domain") visit(base);
    }
  };
  visit(primary);
  return chosen;
}

/** A body value JSON can carry: a bigint becomes its decimal string (the wire takes both). */
export function wireValue(value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return value.map(wireValue);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, wireValue(v)]));
  }
  return value;
}

/** Signs bodies for one domain over a type list (the gateway's published one, or the mirror). */
export class Signing {
  readonly domain: Domain;
  readonly types: Types;

  constructor(domain: Domain = dexDomain(), types: Types = { ...PRIMARY_TYPES, ...NESTED_TYPES }) {
    this.domain = domain;
    const { EIP712Domain: _ignored, ...rest } = types;
    this.types = rest;
  }

  /** The signed body: exactly `message`'s fields (in the type's order) plus `sig`. */
  async sign(signer: TypedDataSigner, primary: string, message: Record<string, unknown>): Promise<Record<string, unknown>> {
    const types = typesFor(primary, this.types);
    const fields = types[primary]!;
    const missing = fields.filter((field) => message[field.name] === undefined).map((field) => field.name);
    if (missing.length > 0) throw new Error(`${primary} needs ${missing.join(", ")}`);
    const ordered = Object.fromEntries(fields.map((field) => [field.name, message[field.name]]));
    const key = (signer as { signingKey?: SigningKey }).signingKey;
    const sig = key === undefined ? await signer.signTypedData(this.domain, types, ordered) : key.sign(this.digest(primary, types, ordered)).serialized;
    return { ...(wireValue(ordered) as Record<string, unknown>), sig };
  }

  private separator: string | undefined;
  private readonly encoders = new Map<string, TypedDataEncoder>();

  /** The EIP-712 digest of `message` as `primary`: keccak256(0x1901 ‖ domain separator ‖ hashStruct). */
  digest(primary: string, types: Types, message: Record<string, unknown>): string {
    this.separator ??= TypedDataEncoder.hashDomain(this.domain);
    let encoder = this.encoders.get(primary);
    if (encoder === undefined) {
      encoder = TypedDataEncoder.from(types);
      this.encoders.set(primary, encoder);
    }
    return keccak256(concat(["0x1901", this.separator, encoder.hash(message)]));
  }
}
