/**
 * WebSocket order entry (`GET /v1/ws` on the gateway, docs/api.md "WebSocket order entry"):
 * the same signed bodies as the REST writes, each in an envelope with a request id; answers
 * (which may come out of order) are matched by id and resolve or throw as REST's would.
 */
import { errorFromAnswer } from "./errors.js";
import type { DexClient, OrderParams, TwapParams } from "./client.js";
import type { WebSocketFactory, WebSocketLike } from "./stream.js";
import type { Int } from "./signing.js";
import type { Accepted, Leverage, Order, Twap } from "./types.js";

export type EntryOp = "order" | "cancel" | "cancel_all" | "amend" | "batch" | "cancel_replace" | "schedule_cancel" | "twap" | "set_leverage";

interface Pending {
  resolve: (body: unknown) => void;
  reject: (error: Error) => void;
}

export class OrderEntry {
  private readonly socket: WebSocketLike;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  readonly ready: Promise<void>;

  /** Connect to `url` (e.g. `ws://127.0.0.1:8000/v1/ws`); `client` signs the bodies. */
  constructor(
    readonly url: string,
    private readonly client: DexClient,
    WebSocket?: WebSocketFactory,
  ) {
    const Factory = WebSocket ?? (globalThis as { WebSocket?: WebSocketFactory }).WebSocket;
    if (Factory === undefined) throw new Error("no WebSocket here: pass one (Node 20: run with --experimental-websocket)");
    this.socket = new Factory(url);
    this.ready = new Promise((resolve, reject) => {
      this.socket.onopen = () => resolve();
      this.socket.onerror = () => reject(new Error(`cannot connect to ${url}`));
    });
    this.socket.onmessage = (event) => this.receive(String(event.data));
    this.socket.onclose = (event) => {
      for (const waiting of this.pending.values()) waiting.reject(new Error(`order entry closed (${event.code} ${event.reason}) before the answer`));
      this.pending.clear();
    };
  }

  close(): void {
    this.socket.close(1000, "client done");
  }

  /** Send one signed body as `op`; the REST answer's body, or its error thrown. */
  async send<T>(op: EntryOp | "session", body: Record<string, unknown> | null, extra: Record<string, unknown> = {}): Promise<T> {
    await this.ready;
    const id = this.nextId++;
    const answer = new Promise<unknown>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.socket.send(JSON.stringify(body === null ? { id, op, ...extra } : { id, op, body, ...extra }));
    return answer as Promise<T>;
  }

  /** Sign and place an order; with `wait`, the order once the matcher processed it. */
  async placeOrder(params: OrderParams, wait = false): Promise<Order | Accepted> {
    return this.send("order", await this.client.orderBody(params), { wait });
  }

  async cancel(market: string, clientOrderId: string): Promise<Order> {
    return this.send("cancel", await this.client.signBody("Cancel", { market, clientOrderId }));
  }

  async cancelAll(market = ""): Promise<{ cancelled: number }> {
    return this.send("cancel_all", await this.client.signBody("CancelAll", { market }));
  }

  /** Place a TWAP; one placed here joins the connection's cancel-on-disconnect. */
  async placeTwap(params: TwapParams): Promise<Twap> {
    return this.send("twap", await this.client.twapBody(params));
  }

  async setLeverage(market: string, initialMarginBps: Int): Promise<Leverage> {
    return this.send("set_leverage", await this.client.setLeverageBody(market, initialMarginBps));
  }

  /** Turn cancel-on-disconnect on or off for the accounts this connection acts for. */
  session(cancelOnDisconnect: boolean): Promise<{ cancelOnDisconnect: boolean }> {
    return this.send("session", null, { cancelOnDisconnect });
  }

  private receive(text: string): void {
    let message: { id?: unknown; status?: number; body?: unknown; headers?: Record<string, string> };
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (typeof message.id !== "number") return;
    const waiting = this.pending.get(message.id);
    if (waiting === undefined) return;
    this.pending.delete(message.id);
    const status = message.status ?? 0;
    if (status >= 200 && status < 300) waiting.resolve(message.body);
    else waiting.reject(errorFromAnswer(status, message.body, message.headers?.["Retry-After"] ?? null));
  }
}
