// The algo ABI's imports (src/sequence/algos/abi.py) and the few helpers both examples use.
//
// Prices and quantities are i64 fixed-point x 1e8; a symbol is its index in the deployment's
// symbols; side 0 = buy / bid, 1 = sell / ask.
//
// Text (log lines, the JSON of a graph) is built in fixed buffers by the functions below --
// `line(); put("buy "); fx(qty); send();` -- never with string concatenation or `new`:
// * the build uses `--runtime stub`, whose allocator never frees, so a handler that
//   allocated on every quote would grow the memory until the host's limit stops the algo;
// * every global here has a constant initial value, so the module has no start function:
//   the host instantiates a module before it gives it any fuel (see ../README.md).

// ---- the imports ------------------------------------------------------------------------

@external("seq", "log")
declare function seq_log(ptr: usize, len: i32): void;
@external("seq", "param")
declare function seq_param(keyPtr: usize, keyLen: i32, outPtr: usize, outCap: i32): i32;
@external("seq", "param_i64")
declare function seq_param_i64(keyPtr: usize, keyLen: i32, dflt: i64): i64;
@external("seq", "param_1e8")
declare function seq_param_1e8(keyPtr: usize, keyLen: i32, dflt: i64): i64;
@external("seq", "submit")
export declare function submit(sym: i32, side: i32, px_1e8: i64, qty_1e8: i64, flags: i32): i64;
@external("seq", "submit_graph")
declare function seq_submit_graph(jsonPtr: usize, jsonLen: i32): i64;
@external("seq", "cancel")
export declare function cancel(handle: i64): i32;
@external("seq", "now_ms")
export declare function now_ms(): i64;

// ---- constants ----------------------------------------------------------------------------

export const BUY: i32 = 0;
export const SELL: i32 = 1;
/** 1.0 in fixed point. */
export const ONE: i64 = 100_000_000;
/** The default given to param_1e8 / param_i64 to tell "not set" from a value. */
export const MISSING: i64 = i64.MIN_VALUE;
/** on_order statuses. */
export const ORDER_FILLED: i32 = 0;
export const ORDER_CANCELLED: i32 = 1;

/** What a negative answer of submit / submit_graph means (abi.py E_*). */
export function errorText(code: i64): string {
  if (code == -1) return "bad argument";
  if (code == -2) return "refused by the engine";
  if (code == -3) return "the algo is stopping";
  if (code == -4) return "rate limit";
  if (code == -5) return "too many open orders";
  return "unknown error";
}

export function statusText(status: i32): string {
  if (status == ORDER_FILLED) return "filled";
  if (status == ORDER_CANCELLED) return "cancelled";
  return "rejected";
}

// ---- text in a fixed buffer ---------------------------------------------------------------

const LINE_CAP = 1024;
const LINE_BUF: usize = memory.data(LINE_CAP);
const JSON_CAP = 4096;
const JSON_BUF: usize = memory.data(JSON_CAP);
const KEY_CAP = 64;
const KEY_BUF: usize = memory.data(KEY_CAP);

// The buffer being written: put/fx/int append to it; what does not fit is cut. Nothing is
// written before line() or json() (zero initial values: a non-constant one would need a
// start function).
let base: usize = 0;
let cap: i32 = 0;
let len: i32 = 0;

/** Start a log line (send it with send()). */
export function line(): void {
  base = LINE_BUF;
  cap = LINE_CAP;
  len = 0;
}

/** Start a JSON text (send it with sendGraph()). */
export function json(): void {
  base = JSON_BUF;
  cap = JSON_CAP;
  len = 0;
}

/** Send the line built since line() to seq.log. */
export function send(): void {
  seq_log(base, len);
  len = 0;
}

/** Send the JSON built since json() to seq.submit_graph: a handle, or a negative error. */
export function sendGraph(): i64 {
  const h = seq_submit_graph(base, len);
  len = 0;
  return h;
}

function byte(c: i32): void {
  if (len < cap) {
    store<u8>(base + <usize>len, <u8>c);
    len++;
  }
}

/** Append an ASCII string (the literals here are ASCII; anything else becomes '?'). */
export function put(s: string): void {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    byte(c < 0x80 ? c : 0x3f);
  }
}

function uint(v: u64): void {
  let div: u64 = 1;
  while (v / div >= 10) div *= 10;
  while (div > 0) {
    byte(0x30 + <i32>((v / div) % 10));
    div /= 10;
  }
}

/** Append a decimal integer. */
export function int(v: i64): void {
  if (v < 0) {
    byte(0x2d); // '-'
    uint(<u64>0 - <u64>v); // i64.MIN_VALUE stays 2^63
  } else {
    uint(<u64>v);
  }
}

/** Append a fixed-point x 1e8 value as a decimal: 0.45, 1.00, -2.125, 95000.00 (trailing
 *  zeros trimmed, two decimals kept) -- also a valid JSON number. */
export function fx(v: i64): void {
  let u = <u64>v;
  if (v < 0) {
    byte(0x2d);
    u = <u64>0 - u;
  }
  uint(u / <u64>ONE);
  byte(0x2e); // '.'
  let frac = u % <u64>ONE;
  let digits = 8;
  while (digits > 2 && frac % 10 == 0) {
    frac /= 10;
    digits--;
  }
  let div: u64 = 1;
  for (let i = 1; i < digits; i++) div *= 10;
  for (let i = 0; i < digits; i++) {
    byte(0x30 + <i32>((frac / div) % 10));
    div /= 10;
  }
}

// ---- params -------------------------------------------------------------------------------

/** Whether every param read so far was well formed; a bad one was logged. */
export let paramsOk = true;

function keyLen(name: string): i32 {
  const n = min(name.length, KEY_CAP);
  for (let i = 0; i < n; i++) store<u8>(KEY_BUF + <usize>i, <u8>name.charCodeAt(i));
  return n;
}

const VALUE_CAP = 128;
const VALUE_BUF: usize = memory.data(VALUE_CAP);

/** Read param *name* into VALUE_BUF: its length (cut at VALUE_CAP), or -1 if it is not set. */
function readParam(name: string): i32 {
  const n = seq_param(KEY_BUF, keyLen(name), VALUE_BUF, VALUE_CAP);
  return n < 0 ? -1 : min(n, VALUE_CAP);
}

/** Append the value of param *name* (at most 64 bytes) to the text being built; false
 *  (and nothing appended) when it is not set. */
export function putParam(name: string): bool {
  const n = readParam(name);
  for (let i = 0; i < min(n, 64); i++) byte(<i32>load<u8>(VALUE_BUF + <usize>i));
  return n >= 0;
}

/** Append the value of param *name* as a JSON string (quoted, escaped); false when it is
 *  not set. */
export function putParamJson(name: string): bool {
  const n = readParam(name);
  if (n < 0) return false;
  byte(0x22);
  for (let i = 0; i < n; i++) {
    const c = <i32>load<u8>(VALUE_BUF + <usize>i);
    if (c == 0x22 || c == 0x5c) {
      byte(0x5c);
      byte(c);
    } else if (c < 0x20) {
      put("\\u00");
      byte(HEX.charCodeAt(c >> 4));
      byte(HEX.charCodeAt(c & 15));
    } else {
      byte(c);
    }
  }
  byte(0x22);
  return true;
}

const HEX = "0123456789abcdef";

export function isSet(name: string): bool {
  return seq_param(KEY_BUF, keyLen(name), 0, 0) >= 0;
}

function malformed(name: string, what: string): void {
  line();
  put("the param ");
  put(name);
  put(" is not ");
  put(what);
  put(": ");
  putParam(name);
  put("; not trading");
  send();
  paramsOk = false;
}

/** A decimal param x 1e8, or *dflt* when it is not set (param_1e8 alone would also answer
 *  the default for a malformed value: that is logged and clears paramsOk). */
export function paramDecimal(name: string, dflt: i64): i64 {
  const v = seq_param_1e8(KEY_BUF, keyLen(name), MISSING);
  if (v != MISSING) return v;
  if (isSet(name)) malformed(name, "a decimal");
  return dflt;
}

/** An integer param, or *dflt* when it is not set (a malformed value is logged). */
export function paramInt(name: string, dflt: i64): i64 {
  const v = seq_param_i64(KEY_BUF, keyLen(name), MISSING);
  if (v != MISSING) return v;
  if (isSet(name)) malformed(name, "an integer");
  return dflt;
}

/** A required decimal param: when it is missing, logs *hint* and clears paramsOk. */
export function requireDecimal(name: string, hint: string): i64 {
  const v = paramDecimal(name, MISSING);
  if (v == MISSING && paramsOk) required(name, hint);
  return v;
}

/** Log that the param *name* is required (*hint* says what to pass) and clear paramsOk. */
export function required(name: string, hint: string): void {
  line();
  put("the param ");
  put(name);
  put(" is required (");
  put(hint);
  put("); not trading");
  send();
  paramsOk = false;
}

export function requirePositive(name: string, v: i64): void {
  if (v <= 0) {
    line();
    put("the param ");
    put(name);
    put(" must be above 0; not trading");
    send();
    paramsOk = false;
  }
}
