// two_leg: buy A at its ask and sell B at its bid when B's bid is at least `edge` above A's
// ask -- as ONE graph (seq.submit_graph) in which leg B is triggered when leg A has filled.
// ../two_leg.wat does the same with two plain `submit` calls that fire together.
//
// Symbols: 0 = A (bought), 1 = B (sold). A graph names its symbols, and an algo only knows
// the indexes, so the names are params too; they must be the deployment's two symbols.
// Params:
//   edge             decimal, required: act when B.bid - A.ask >= edge
//   symbol_a         A's symbol, required (the first --symbol)
//   symbol_b         B's symbol, required (the second --symbol)
//   qty              decimal, default 1: the size of each leg
//   max_pairs        integer, default 1: how many graphs to send in all
//   instrument_type  default "prediction" (Kalshi, Polymarket); "spot" for Coinbase
//
// B's limit is B's bid when the graph is sent: if B's bid has fallen by the time A fills,
// leg B rests at that limit until the book comes back to it. A graph is open until it ends
// (on_order: 0 completed, 1 cancelled, 2 failed); a refused graph waits 5 s.

import {
  BUY, ONE, errorText, fx, int, isSet, json, line, now_ms, paramDecimal, paramInt, paramsOk,
  put, putParam, putParamJson, required, requireDecimal, requirePositive, send, sendGraph,
} from "./seq";

const RETRY_MS: i64 = 5000;

let enabled = false;
let edge: i64 = 0;
let qty: i64 = 0;
let maxPairs: i64 = 0;
// the latest top of book (0 = that side is empty or not seen yet)
let aAsk: i64 = 0;
let bBid: i64 = 0;
// the current pair
let attempt: i64 = 0; // pair number in the log lines
let pairs: i64 = 0; // graphs accepted
let graph: i64 = 0; // its handle
let live = false; // it has not ended yet
let filledA: i64 = 0;
let filledB: i64 = 0;
let quietUntil: i64 = 0;

export function init(): void {
  edge = requireDecimal("edge", "e.g. --param edge=0.02 to act when B.bid - A.ask >= 0.02");
  if (!paramsOk) return;
  if (!isSet("symbol_a")) required("symbol_a", "A's symbol, the first --symbol");
  else if (!isSet("symbol_b")) required("symbol_b", "B's symbol, the second --symbol");
  qty = paramDecimal("qty", ONE);
  requirePositive("qty", qty);
  maxPairs = paramInt("max_pairs", 1);
  requirePositive("max_pairs", maxPairs);
  if (!paramsOk) return;
  // "start: edge=0.02 qty=1.00 max_pairs=1 A=... B=...; buys A at its ask, then ..."
  line();
  put("start: edge="); fx(edge);
  put(" qty="); fx(qty);
  put(" max_pairs="); int(maxPairs);
  put(" A="); putParam("symbol_a");
  put(" B="); putParam("symbol_b");
  put("; buys A at its ask, then sells B at its bid once A has filled, when B.bid - A.ask >= edge");
  send();
  enabled = true;
}

/** One node of the graph: {"node_id":..,"symbol":..,"side":..,"qty":..,...,"limit_price":..} */
function node(id: string, symbolParam: string, side: string, price: i64): void {
  put('{"node_id":"'); put(id);
  put('","symbol":'); putParamJson(symbolParam);
  put(',"side":"'); put(side);
  put('","qty":'); fx(qty);
  put(',"instrument_type":');
  if (!putParamJson("instrument_type")) put('"prediction"');
  put(',"limit_price":'); fx(price);
  put("}");
}

function sendPair(a: i64, b: i64): void {
  attempt++;
  filledA = 0;
  filledB = 0;
  json();
  put('{"nodes":[');
  node("a", "symbol_a", "buy", a);
  put(",");
  node("b", "symbol_b", "sell", b);
  put('],"edges":[{"from":"a","to":"b","trigger":"filled"}]}');
  const h = sendGraph();
  line();
  put("pair "); int(attempt);
  if (h > 0) {
    graph = h;
    live = true;
    pairs++;
    // "pair 1: buy A 1.00 @ 0.45, then sell B 1.00 @ 0.50 (B.bid - A.ask = 0.05 >= edge 0.02), graph 3"
    put(": buy A "); fx(qty); put(" @ "); fx(a);
    put(", then sell B "); fx(qty); put(" @ "); fx(b);
    put(" (B.bid - A.ask = "); fx(b - a);
    put(" >= edge "); fx(edge);
    put("), graph "); int(h);
  } else {
    quietUntil = now_ms() + RETRY_MS;
    put(": submit_graph failed: error "); int(h);
    put(" ("); put(errorText(h)); put("); trying again in 5 s");
  }
  send();
}

export function on_quote(sym: i32, bid_px: i64, bid_qty: i64, ask_px: i64, ask_qty: i64): void {
  if (sym == 0) aAsk = ask_px;
  else if (sym == 1) bBid = bid_px;
  if (!enabled) return;
  if (aAsk <= 0 || bBid <= 0) return; // A has no ask or B no bid
  if (live || pairs >= maxPairs) return;
  if (bBid - aAsk < edge) return;
  if (now_ms() < quietUntil) return;
  sendPair(aAsk, bBid);
}

export function on_fill(handle: i64, sym: i32, side: i32, px_1e8: i64, qty_1e8: i64): void {
  if (handle != graph) return;
  // "fill: leg A buy 1.00 @ 0.45 (leg filled 1.00)"
  line();
  if (side == BUY) {
    filledA += qty_1e8;
    put("fill: leg A buy "); fx(qty_1e8); put(" @ "); fx(px_1e8);
    put(" (leg filled "); fx(filledA); put(")");
  } else {
    filledB += qty_1e8;
    put("fill: leg B sell "); fx(qty_1e8); put(" @ "); fx(px_1e8);
    put(" (leg filled "); fx(filledB); put(")");
  }
  send();
}

export function on_order(handle: i64, status: i32): void {
  if (handle != graph || !live) return;
  live = false;
  // "pair 1 done: graph 3 completed, A filled 1.00, B filled 1.00[; max_pairs reached, ...]"
  line();
  put("pair "); int(attempt);
  put(" done: graph "); int(handle);
  put(status == 0 ? " completed" : status == 1 ? " cancelled" : " failed");
  put(", A filled "); fx(filledA);
  put(", B filled "); fx(filledB);
  if (pairs >= maxPairs) put("; max_pairs reached, no more pairs");
  send();
}
