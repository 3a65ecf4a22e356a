// threshold_taker: buy symbol 0 at its ask whenever the ask is at or below a threshold.
// The same algo as ../threshold_taker.wat, in AssemblyScript.
//
// Params: buy_below (decimal price, required), qty (decimal, default 1),
// max_position (decimal, default qty). One order at a time; fills move the position;
// the end of the order frees the slot; a refused submit waits 5 s before the next try.

import {
  BUY, ONE, errorText, fx, int, line, now_ms, paramDecimal, paramsOk, put, requireDecimal,
  requirePositive, send, statusText, submit,
} from "./seq";

const RETRY_MS: i64 = 5000;

let enabled = false;
let buyBelow: i64 = 0;
let qty: i64 = 0;
let maxPosition: i64 = 0;
let position: i64 = 0;
let open: i64 = 0; // the open order's handle, 0 = none
let quietUntil: i64 = 0; // no submit before this (ms)
let saidFull = false; // "not buying" logged since the last fill

export function init(): void {
  buyBelow = requireDecimal("buy_below", "e.g. --param buy_below=0.60");
  if (!paramsOk) return;
  qty = paramDecimal("qty", ONE);
  requirePositive("qty", qty);
  maxPosition = paramDecimal("max_position", qty);
  if (!paramsOk) return;
  // "start: buy_below=0.50 qty=1.00 max_position=1.00; buys symbol 0 at its ask when ..."
  line();
  put("start: buy_below="); fx(buyBelow);
  put(" qty="); fx(qty);
  put(" max_position="); fx(maxPosition);
  put("; buys symbol 0 at its ask when ask <= buy_below");
  send();
  enabled = true;
}

export function on_quote(sym: i32, bid_px: i64, bid_qty: i64, ask_px: i64, ask_qty: i64): void {
  if (!enabled || sym != 0) return;
  if (ask_px <= 0 || ask_px > buyBelow) return; // no ask, or too dear
  if (open != 0) return; // one order at a time
  if (now_ms() < quietUntil) return;
  if (position + qty > maxPosition) {
    if (!saidFull) {
      line();
      put("not buying: position "); fx(position);
      put(" + qty "); fx(qty);
      put(" > max_position "); fx(maxPosition);
      send();
      saidFull = true;
    }
    return;
  }
  const h = submit(0, BUY, ask_px, qty, 0);
  line();
  if (h > 0) {
    open = h;
    // "buy 1.00 @ 0.45 (ask 0.45 <= buy_below 0.50), order 7"
    put("buy "); fx(qty);
    put(" @ "); fx(ask_px);
    put(" (ask "); fx(ask_px);
    put(" <= buy_below "); fx(buyBelow);
    put("), order "); int(h);
  } else {
    quietUntil = now_ms() + RETRY_MS;
    put("submit failed: error "); int(h);
    put(" ("); put(errorText(h)); put("); trying again in 5 s");
  }
  send();
}

export function on_fill(handle: i64, sym: i32, side: i32, px_1e8: i64, qty_1e8: i64): void {
  position += side == BUY ? qty_1e8 : -qty_1e8;
  saidFull = false;
  // "fill: buy 1.00 @ 0.45, position 1.00"
  line();
  put(side == BUY ? "fill: buy " : "fill: sell "); fx(qty_1e8);
  put(" @ "); fx(px_1e8);
  put(", position "); fx(position);
  send();
}

export function on_order(handle: i64, status: i32): void {
  if (handle == open) open = 0;
  // "order 7 filled; position 1.00"
  line();
  put("order "); int(handle);
  put(" "); put(statusText(status));
  put("; position "); fx(position);
  send();
}
