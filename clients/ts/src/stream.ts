/**
 * The broadcaster's WebSocket (API.md §7): one connection, any topics, reconnecting with
 * backoff; and {@link BookSync}, a local order book kept equal to the exchange's.
 *
 * On every (re)connection each held topic is subscribed again, so its snapshot comes first
 * and updates follow. A book applies an update only when its `seq` is the next one; a `seq`
 * that skips one is a gap: the book unsubscribes and subscribes again (a fresh snapshot) by
 * itself, ignoring updates until that snapshot arrives.
 */
import type { Level } from "./types.js";

/** The part of the WHATWG WebSocket this module uses (browsers; Node 20 with --experimental-websocket, Node 22+). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketFactory = new (url: string) => WebSocketLike;

export interface ServerMessage {
  topic?: string;
  /** "closed" is this client's own: the connection ended, a snapshot will follow on the next. */
  type: "snapshot" | "update" | "error" | "closed" | (string & {});
  seq?: number;
  data?: unknown;
  code?: string;
  message?: string;
}

export type TopicHandler = (message: ServerMessage) => void;

export interface StreamOptions {
  /** The broadcaster, e.g. `ws://127.0.0.1:8001/ws`. */
  url: string;
  WebSocket?: WebSocketFactory;
  /** First reconnection delay (ms), doubled each failed try up to `maxBackoffMs`. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Called on every state change: "open", "closed", "reconnecting". */
  onState?: (state: "open" | "closed" | "reconnecting", detail?: string) => void;
}

const OPEN = 1;
const CONNECT_TIMEOUT_MS = 5000;

/** One broadcaster connection holding any number of topics; reconnects until stopped. */
export class Stream {
  readonly url: string;
  private readonly Factory: WebSocketFactory;
  private readonly handlers = new Map<string, TopicHandler>();
  private socket: WebSocketLike | null = null;
  private stopped = true;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private delay: number;
  private readonly onState: StreamOptions["onState"];
  /** Connections opened (the first included). */
  connections = 0;

  constructor(options: StreamOptions) {
    this.url = options.url;
    const Factory = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketFactory }).WebSocket;
    if (Factory === undefined) throw new Error("no WebSocket here: pass options.WebSocket (Node 20: run with --experimental-websocket)");
    this.Factory = Factory;
    this.backoffMs = options.backoffMs ?? 200;
    this.maxBackoffMs = options.maxBackoffMs ?? 5000;
    this.delay = this.backoffMs;
    this.onState = options.onState;
  }

  get open(): boolean {
    return this.socket?.readyState === OPEN;
  }

  start(): this {
    if (this.stopped) {
      this.stopped = false;
      this.connect();
    }
    return this;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.socket?.close(1000, "client done");
    this.socket = null;
  }

  /** Hold `topic`: its messages go to `handler` (a snapshot first, on each connection). */
  subscribe(topic: string, handler: TopicHandler): void {
    this.handlers.set(topic, handler);
    this.send({ op: "subscribe", topic });
  }

  unsubscribe(topic: string): void {
    if (this.handlers.delete(topic)) this.send({ op: "unsubscribe", topic });
  }

  /** Ask for a fresh snapshot of a held topic. */
  resubscribe(topic: string): void {
    this.send({ op: "unsubscribe", topic });
    this.send({ op: "subscribe", topic });
  }

  private send(message: Record<string, unknown>): void {
    if (this.open) this.socket!.send(JSON.stringify(message));
  }

  private connect(): void {
    const socket = new this.Factory(this.url);
    this.socket = socket;
    // A connection that neither opens nor fails in time is dropped and tried again.
    const opening = setTimeout(() => this.drop(socket, "connect timed out"), CONNECT_TIMEOUT_MS);
    socket.onopen = () => {
      clearTimeout(opening);
      this.connections += 1;
      this.delay = this.backoffMs;
      this.onState?.("open");
      for (const topic of this.handlers.keys()) socket.send(JSON.stringify({ op: "subscribe", topic }));
    };
    socket.onmessage = (event) => {
      let message: ServerMessage;
      try {
        message = JSON.parse(String(event.data)) as ServerMessage;
      } catch {
        return;
      }
      if (message.topic === undefined) return;
      this.handlers.get(message.topic)?.(message);
    };
    // Some implementations (Node 20's) report a refused connection by an error alone, no close.
    socket.onerror = () => {
      clearTimeout(opening);
      if (socket.readyState !== OPEN) this.drop(socket, "connection failed");
    };
    socket.onclose = (event) => {
      clearTimeout(opening);
      this.drop(socket, `${event.code} ${event.reason}`);
    };
  }

  /** `socket` is done: tell the topics, then connect again after the backoff (unless stopped). */
  private drop(socket: WebSocketLike, detail: string): void {
    if (this.socket !== socket) return;
    this.socket = null;
    try {
      socket.close();
    } catch {
      // already closed or never opened
    }
    for (const [topic, handler] of this.handlers) handler({ topic, type: "closed" });
    this.onState?.("closed", detail);
    if (this.stopped) return;
    const wait = Math.min(this.delay, this.maxBackoffMs) * (0.75 + Math.random() * 0.5);
    this.delay = Math.min(this.delay * 2, this.maxBackoffMs);
    this.onState?.("reconnecting", `in ${Math.round(wait)} ms`);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.stopped) this.connect();
    }, wait);
  }
}

/** Aggregated levels of one market: price → qty, per side. */
export class OrderBook {
  readonly bids = new Map<number, number>();
  readonly asks = new Map<number, number>();
  seq = 0;

  /** Replace everything with a snapshot (`{bids, asks}` as REST depth) at `seq`. */
  reset(seq: number, data: { bids: Level[]; asks: Level[] }): void {
    this.bids.clear();
    this.asks.clear();
    for (const [price, qty] of data.bids) this.bids.set(Number(price), Number(qty));
    for (const [price, qty] of data.asks) this.asks.set(Number(price), Number(qty));
    this.seq = seq;
  }

  /** Apply an update: each level's new total, `0` = gone. */
  apply(seq: number, data: { bids?: Level[]; asks?: Level[] }): void {
    for (const [side, levels] of [
      [this.bids, data.bids ?? []],
      [this.asks, data.asks ?? []],
    ] as const) {
      for (const [price, qty] of levels) {
        if (Number(qty) === 0) side.delete(Number(price));
        else side.set(Number(price), Number(qty));
      }
    }
    this.seq = seq;
  }

  /** Levels best first (bids high to low, asks low to high), at most `limit`. */
  levels(side: "bids" | "asks", limit = Infinity): Level[] {
    const sorted = [...this[side].entries()].sort((a, b) => (side === "bids" ? b[0] - a[0] : a[0] - b[0]));
    return sorted.slice(0, limit) as Level[];
  }
}

export interface BookSyncStats {
  snapshots: number;
  updates: number;
  gaps: number;
}

/** A local book of `market` kept in sync over a {@link Stream}'s `depth:{market}` topic. */
export class BookSync {
  readonly market: string;
  readonly topic: string;
  readonly book = new OrderBook();
  readonly stats: BookSyncStats = { snapshots: 0, updates: 0, gaps: 0 };
  /** False from a gap (or before the first snapshot) until the next snapshot. */
  synced = false;
  private readonly stream: Stream;
  private readonly listeners = new Set<(book: OrderBook) => void>();

  constructor(stream: Stream, market: string) {
    this.stream = stream;
    this.market = market;
    this.topic = `depth:${market}`;
    stream.subscribe(this.topic, (message) => this.receive(message));
  }

  /** Call `listener` after each change of the book; returns its remover. */
  onChange(listener: (book: OrderBook) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.stream.unsubscribe(this.topic);
  }

  private receive(message: ServerMessage): void {
    const seq = message.seq ?? 0;
    if (message.type === "snapshot") {
      this.book.reset(seq, message.data as { bids: Level[]; asks: Level[] });
      this.synced = true;
      this.stats.snapshots += 1;
    } else if (message.type === "update") {
      if (!this.synced || seq <= this.book.seq) return;
      if (seq !== this.book.seq + 1) {
        this.synced = false;
        this.stats.gaps += 1;
        this.stream.resubscribe(this.topic);
        return;
      }
      this.book.apply(seq, message.data as { bids?: Level[]; asks?: Level[] });
      this.stats.updates += 1;
    } else {
      if (message.type === "closed") this.synced = false;
      return;
    }
    for (const listener of this.listeners) listener(this.book);
  }
}
