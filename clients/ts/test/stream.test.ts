// The stream and the synced book against a scripted WebSocket (no exchange needed): a seq gap
// re-subscribes by itself, and a connection that fails (by an error alone, as Node 20's does)
// or closes is tried again with a growing backoff, every topic subscribed again.
import { strict as assert } from "node:assert";
import { test } from "node:test";
import { BookSync, Stream, type WebSocketLike } from "../src/index.js";

class FakeSocket implements WebSocketLike {
  static made: FakeSocket[] = [];
  readyState = 0;
  sent: unknown[] = [];
  onopen: WebSocketLike["onopen"] = null;
  onclose: WebSocketLike["onclose"] = null;
  onerror: WebSocketLike["onerror"] = null;
  onmessage: WebSocketLike["onmessage"] = null;
  constructor(readonly url: string) {
    FakeSocket.made.push(this);
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data));
  }
  close(): void {
    this.readyState = 3;
  }
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  receive(message: unknown): void {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

test("a seq gap re-subscribes, updates wait for the fresh snapshot, and the book ends as the server's", () => {
  FakeSocket.made = [];
  const stream = new Stream({ url: "ws://x/ws", WebSocket: FakeSocket }).start();
  const sync = new BookSync(stream, "BTC-USDC");
  const socket = FakeSocket.made[0]!;
  socket.open();
  assert.deepEqual(socket.sent, [{ op: "subscribe", topic: "depth:BTC-USDC" }]);
  const topic = "depth:BTC-USDC";
  socket.receive({ topic, type: "snapshot", seq: 5, data: { bids: [[100, 3]], asks: [[110, 2]] } });
  socket.receive({ topic, type: "update", seq: 5, data: { bids: [[100, 9]] } }); // old: ignored
  socket.receive({ topic, type: "update", seq: 6, data: { bids: [[101, 1]], asks: [[110, 0]] } });
  assert.deepEqual([sync.book.levels("bids"), sync.book.levels("asks"), sync.book.seq], [[[101, 1], [100, 3]], [], 6]);

  socket.receive({ topic, type: "update", seq: 8, data: { bids: [[102, 1]] } }); // 7 is missing
  assert.equal(sync.synced, false);
  assert.deepEqual(socket.sent.slice(1), [{ op: "unsubscribe", topic }, { op: "subscribe", topic }]);
  socket.receive({ topic, type: "update", seq: 9, data: { bids: [[103, 1]] } }); // before the snapshot: ignored
  assert.deepEqual(sync.book.levels("bids"), [[101, 1], [100, 3]]);
  socket.receive({ topic, type: "snapshot", seq: 9, data: { bids: [[103, 1], [102, 1], [101, 1]], asks: [] } });
  socket.receive({ topic, type: "update", seq: 10, data: { bids: [[101, 0]] } });
  assert.equal(sync.synced, true);
  assert.deepEqual([sync.book.levels("bids"), sync.book.seq, sync.stats], [[[103, 1], [102, 1]], 10, { snapshots: 2, updates: 2, gaps: 1 }]);
  stream.stop();
});

test("a failed or closed connection is tried again with a growing backoff, and its topics subscribed again", async () => {
  FakeSocket.made = [];
  const states: string[] = [];
  const stream = new Stream({ url: "ws://x/ws", WebSocket: FakeSocket, backoffMs: 20, maxBackoffMs: 80, onState: (s) => states.push(s) }).start();
  const sync = new BookSync(stream, "ETH-USDC");
  FakeSocket.made[0]!.onerror?.({}); // refused: an error and no close
  await sleep(40);
  assert.equal(FakeSocket.made.length, 2);
  FakeSocket.made[1]!.onerror?.({});
  await sleep(20);
  assert.equal(FakeSocket.made.length, 2, "the second wait is longer than the first");
  await sleep(60);
  assert.equal(FakeSocket.made.length, 3);
  const socket = FakeSocket.made[2]!;
  socket.open();
  assert.deepEqual(socket.sent, [{ op: "subscribe", topic: "depth:ETH-USDC" }]);
  socket.receive({ topic: "depth:ETH-USDC", type: "snapshot", seq: 1, data: { bids: [], asks: [[5, 5]] } });
  assert.equal(sync.synced, true);
  socket.onclose?.({ code: 1006, reason: "" });
  assert.equal(sync.synced, false, "a dropped connection's book is not in sync");
  await sleep(40);
  assert.equal(FakeSocket.made.length, 4, "after an open connection the backoff starts again from the first step");
  stream.stop();
  assert.equal(stream.connections, 1);
  assert.deepEqual(states.slice(0, 2), ["closed", "reconnecting"]);
});
