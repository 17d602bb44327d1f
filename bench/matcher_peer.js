// The in-memory peer for bench/matcher.py: nodejs-order-book over stream-200k.csv.
// usage: node bench/matcher_peer.js <node_modules dir> <stream csv>
// Prints one JSON line: {orders, seconds, rate, bestBid, bestAsk}.
'use strict';
const path = require('path');
const fs = require('fs');
const { OrderBook } = require(path.join(process.argv[2], 'nodejs-order-book'));

const lines = fs.readFileSync(process.argv[3], 'utf8').trim().split('\n').slice(1);
const orders = lines.map((line) => {
  const [id, side, price, qty] = line.split(',');
  return { id, side: side === 'B' ? 'buy' : 'sell', price: Number(price), size: Number(qty) };
});
const ob = new OrderBook();
const start = process.hrtime.bigint();
for (const o of orders) ob.limit(o);
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const [asks, bids] = ob.depth();
const best = (levels, pick) => (levels.length ? pick(levels.map((l) => l[0])) : null);
console.log(JSON.stringify({
  orders: orders.length,
  seconds,
  rate: orders.length / seconds,
  bestBid: best(bids, (p) => Math.max(...p)),
  bestAsk: best(asks, (p) => Math.min(...p)),
}));
