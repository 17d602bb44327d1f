/** OrderBookDEX's TypeScript SDK: signing, the REST API and a synced order book. */
export * from "./errors.js";
export * from "./signing.js";
export * from "./types.js";
export * from "./client.js";
export * from "./stream.js";
export * from "./entry.js";
