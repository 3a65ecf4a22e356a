;; threshold_taker: buy symbol 0 at its ask whenever the ask is at or below a threshold.
;;
;; Params (--param KEY=VALUE):
;;   buy_below     decimal price, required: buy when ask <= buy_below
;;   qty           decimal, default 1: the size of each buy
;;   max_position  decimal, default qty: never buy past this position
;;
;; One order at a time: while a buy is open nothing else is sent. Fills move
;; the position; the end of the order (on_order) frees the slot. A refused
;; submit is logged and the algo waits 5 s before it tries again, so a
;; refusal costs one log line, not one per quote.
;;
;; Prices and quantities are i64 fixed-point x 1e8 (abi.py). Log lines are
;; built in a buffer with the small $put* helpers below and sent with seq.log.
;;
;; Memory map (one 64 KiB page):
;;   0x0100-0x07ff  NUL-terminated strings (the data segments below)
;;   0x0800-0x083f  scratch for number formatting
;;   0x1000-0x13ff  the log line being built
(module
  (import "seq" "log" (func $log (param i32 i32)))
  (import "seq" "param" (func $param (param i32 i32 i32 i32) (result i32)))
  (import "seq" "param_1e8" (func $param_1e8 (param i32 i32 i64) (result i64)))
  (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
  (import "seq" "now_ms" (func $now_ms (result i64)))

  (memory (export "memory") 1)

  ;; param keys
  (data (i32.const 0x100) "buy_below\00")
  (data (i32.const 0x110) "qty\00")
  (data (i32.const 0x120) "max_position\00")
  ;; start and parameter errors
  (data (i32.const 0x200) "the param buy_below is required (e.g. --param buy_below=0.60); not trading\00")
  (data (i32.const 0x280) "the param \00")
  (data (i32.const 0x2c0) " is not a decimal: \00")
  (data (i32.const 0x300) "; not trading\00")
  (data (i32.const 0x320) " must be above 0\00")
  (data (i32.const 0x340) "start: buy_below=\00")
  (data (i32.const 0x360) " qty=\00")
  (data (i32.const 0x370) " max_position=\00")
  (data (i32.const 0x380) "; buys symbol 0 at its ask when ask <= buy_below\00")
  ;; decisions
  (data (i32.const 0x3e0) "buy \00")
  (data (i32.const 0x3f0) " @ \00")
  (data (i32.const 0x400) " (ask \00")
  (data (i32.const 0x410) " <= buy_below \00")
  (data (i32.const 0x420) "), order \00")
  (data (i32.const 0x430) "fill: \00")
  (data (i32.const 0x440) "sell \00")
  (data (i32.const 0x450) ", position \00")
  (data (i32.const 0x460) "order \00")
  (data (i32.const 0x470) " filled\00")
  (data (i32.const 0x480) " cancelled\00")
  (data (i32.const 0x490) " rejected\00")
  (data (i32.const 0x4a0) "; position \00")
  (data (i32.const 0x500) "not buying: position \00")
  (data (i32.const 0x520) " + qty \00")
  (data (i32.const 0x530) " > max_position \00")
  (data (i32.const 0x560) "submit failed: error \00")
  (data (i32.const 0x580) " (\00")
  (data (i32.const 0x590) "); trying again in 5 s\00")
  ;; submit error reasons at 0x600 + 32 * -code (abi.py E_*)
  (data (i32.const 0x600) "unknown error\00")
  (data (i32.const 0x620) "bad argument\00")
  (data (i32.const 0x640) "refused by the engine\00")
  (data (i32.const 0x660) "the algo is stopping\00")
  (data (i32.const 0x680) "rate limit\00")
  (data (i32.const 0x6a0) "too many open orders\00")

  (global $SCRATCH i32 (i32.const 0x800))
  (global $LINE i32 (i32.const 0x1000))
  (global $LINE_END i32 (i32.const 0x1400))
  (global $ONE i64 (i64.const 100000000))              ;; 1.0 in fixed point
  (global $MISSING i64 (i64.const -9223372036854775808)) ;; i64 min: "no such param"
  (global $RETRY_MS i64 (i64.const 5000))

  (global $cur (mut i32) (i32.const 0x1000))  ;; end of the line being built
  (global $enabled (mut i32) (i32.const 0))   ;; params read and valid
  (global $bad (mut i32) (i32.const 0))       ;; a param was malformed
  (global $buy_below (mut i64) (i64.const 0))
  (global $qty (mut i64) (i64.const 0))
  (global $max_pos (mut i64) (i64.const 0))
  (global $pos (mut i64) (i64.const 0))
  (global $open (mut i64) (i64.const 0))       ;; the open order's handle, 0 = none
  (global $quiet_until (mut i64) (i64.const 0)) ;; no submit before this (ms)
  (global $said_full (mut i32) (i32.const 0))  ;; "not buying" logged since the last fill

  ;; ---- building log lines ---------------------------------------------------------------

  (func $strlen (param $p i32) (result i32)
    (local $q i32)
    (local.set $q (local.get $p))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (local.get $q))))
        (local.set $q (i32.add (local.get $q) (i32.const 1)))
        (br $next)))
    (i32.sub (local.get $q) (local.get $p)))

  ;; Append $n bytes from $p (silently cut at the end of the line buffer).
  (func $put (param $p i32) (param $n i32)
    (local.set $n (select (local.get $n) (i32.sub (global.get $LINE_END) (global.get $cur))
                          (i32.le_u (local.get $n) (i32.sub (global.get $LINE_END) (global.get $cur)))))
    (memory.copy (global.get $cur) (local.get $p) (local.get $n))
    (global.set $cur (i32.add (global.get $cur) (local.get $n))))

  (func $putc (param $c i32)
    (i32.store8 (i32.add (global.get $SCRATCH) (i32.const 56)) (local.get $c))
    (call $put (i32.add (global.get $SCRATCH) (i32.const 56)) (i32.const 1)))

  ;; Append a NUL-terminated string.
  (func $puts (param $p i32)
    (call $put (local.get $p) (call $strlen (local.get $p))))

  ;; Append $v as an unsigned decimal integer (digits written backwards into the scratch).
  (func $put_u64 (param $v i64)
    (local $p i32)
    (local.set $p (i32.add (global.get $SCRATCH) (i32.const 32)))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $v) (i64.const 0))))
    (call $put (local.get $p) (i32.sub (i32.add (global.get $SCRATCH) (i32.const 32)) (local.get $p))))

  (func $put_i64 (param $v i64)
    (if (i64.lt_s (local.get $v) (i64.const 0))
      (then
        (call $putc (i32.const 45))                          ;; '-'
        (local.set $v (i64.sub (i64.const 0) (local.get $v))))) ;; i64 min stays 2^63 unsigned
    (call $put_u64 (local.get $v)))

  ;; Append a fixed-point x 1e8 value as a decimal: "0.45", "1.00", "-2.125", "95000.00"
  ;; (trailing zeros trimmed, at least two decimals kept).
  (func $put_fx (param $v i64)
    (local $frac i64)
    (local $i i32)
    (local $n i32)
    (if (i64.lt_s (local.get $v) (i64.const 0))
      (then
        (call $putc (i32.const 45))
        (local.set $v (i64.sub (i64.const 0) (local.get $v)))))
    (call $put_u64 (i64.div_u (local.get $v) (global.get $ONE)))
    (call $putc (i32.const 46))                               ;; '.'
    ;; the eight fraction digits at SCRATCH+40 .. SCRATCH+47
    (local.set $frac (i64.rem_u (local.get $v) (global.get $ONE)))
    (local.set $i (i32.const 8))
    (loop $digit
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (i32.add (global.get $SCRATCH) (i32.const 40)) (local.get $i))
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $frac) (i64.const 10)))))
      (local.set $frac (i64.div_u (local.get $frac) (i64.const 10)))
      (br_if $digit (local.get $i)))
    (local.set $n (i32.const 8))
    (block $trimmed
      (loop $trim
        (br_if $trimmed (i32.le_u (local.get $n) (i32.const 2)))
        (br_if $trimmed (i32.ne (i32.load8_u (i32.add (i32.add (global.get $SCRATCH) (i32.const 39))
                                                      (local.get $n)))
                                (i32.const 48)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $trim)))
    (call $put (i32.add (global.get $SCRATCH) (i32.const 40)) (local.get $n)))

  ;; Send the line built so far and start a new one.
  (func $flush
    (call $log (global.get $LINE) (i32.sub (global.get $cur) (global.get $LINE)))
    (global.set $cur (global.get $LINE)))

  ;; ---- params ---------------------------------------------------------------------------

  ;; The decimal param $key x 1e8, or $default when it is not set. A value that is set but
  ;; is not a decimal is logged and sets $bad (param_1e8 alone would answer the default).
  (func $decimal (param $key i32) (param $default i64) (result i64)
    (local $v i64)
    (local $n i32)
    (local.set $v (call $param_1e8 (local.get $key) (call $strlen (local.get $key)) (global.get $MISSING)))
    (if (i64.ne (local.get $v) (global.get $MISSING)) (then (return (local.get $v))))
    (if (i32.lt_s (call $param (local.get $key) (call $strlen (local.get $key)) (i32.const 0) (i32.const 0))
                  (i32.const 0))
      (then (return (local.get $default))))
    ;; "the param KEY is not a decimal: VALUE; not trading" (VALUE cut at 64 bytes)
    (call $puts (i32.const 0x280))
    (call $puts (local.get $key))
    (call $puts (i32.const 0x2c0))
    (local.set $n (call $param (local.get $key) (call $strlen (local.get $key))
                               (global.get $cur) (i32.const 64)))
    (global.set $cur (i32.add (global.get $cur)
                              (select (local.get $n) (i32.const 64) (i32.le_u (local.get $n) (i32.const 64)))))
    (call $puts (i32.const 0x300))
    (call $flush)
    (global.set $bad (i32.const 1))
    (local.get $default))

  (func $require_positive (param $key i32) (param $v i64)
    (if (i64.le_s (local.get $v) (i64.const 0))
      (then
        (call $puts (i32.const 0x280))
        (call $puts (local.get $key))
        (call $puts (i32.const 0x320))
        (call $puts (i32.const 0x300))
        (call $flush)
        (global.set $bad (i32.const 1)))))

  (func (export "init")
    (global.set $buy_below (call $decimal (i32.const 0x100) (global.get $MISSING)))
    (if (i64.eq (global.get $buy_below) (global.get $MISSING))
      (then
        (if (i32.eqz (global.get $bad))
          (then
            (call $puts (i32.const 0x200))
            (call $flush)))
        (return)))
    (global.set $qty (call $decimal (i32.const 0x110) (global.get $ONE)))
    (call $require_positive (i32.const 0x110) (global.get $qty))
    (global.set $max_pos (call $decimal (i32.const 0x120) (global.get $qty)))
    (if (global.get $bad) (then (return)))
    ;; "start: buy_below=0.50 qty=1.00 max_position=1.00; buys symbol 0 at its ask when ..."
    (call $puts (i32.const 0x340))
    (call $put_fx (global.get $buy_below))
    (call $puts (i32.const 0x360))
    (call $put_fx (global.get $qty))
    (call $puts (i32.const 0x370))
    (call $put_fx (global.get $max_pos))
    (call $puts (i32.const 0x380))
    (call $flush)
    (global.set $enabled (i32.const 1)))

  ;; ---- events ---------------------------------------------------------------------------

  (func (export "on_quote") (param $sym i32) (param $bid_px i64) (param $bid_qty i64)
                            (param $ask_px i64) (param $ask_qty i64)
    (local $h i64)
    (local $code i32)
    (if (i32.eqz (global.get $enabled)) (then (return)))
    (if (local.get $sym) (then (return)))
    (if (i64.le_s (local.get $ask_px) (i64.const 0)) (then (return)))     ;; no ask
    (if (i64.gt_s (local.get $ask_px) (global.get $buy_below)) (then (return)))
    (if (i64.ne (global.get $open) (i64.const 0)) (then (return)))        ;; one order at a time
    (if (i64.lt_s (call $now_ms) (global.get $quiet_until)) (then (return)))
    (if (i64.gt_s (i64.add (global.get $pos) (global.get $qty)) (global.get $max_pos))
      (then
        ;; once per position change: "not buying: position 1.00 + qty 1.00 > max_position 1.00"
        (if (i32.eqz (global.get $said_full))
          (then
            (call $puts (i32.const 0x500))
            (call $put_fx (global.get $pos))
            (call $puts (i32.const 0x520))
            (call $put_fx (global.get $qty))
            (call $puts (i32.const 0x530))
            (call $put_fx (global.get $max_pos))
            (call $flush)
            (global.set $said_full (i32.const 1))))
        (return)))
    (local.set $h (call $submit (i32.const 0) (i32.const 0) (local.get $ask_px) (global.get $qty) (i32.const 0)))
    (if (i64.gt_s (local.get $h) (i64.const 0))
      (then
        (global.set $open (local.get $h))
        ;; "buy 1.00 @ 0.45 (ask 0.45 <= buy_below 0.50), order 7"
        (call $puts (i32.const 0x3e0))
        (call $put_fx (global.get $qty))
        (call $puts (i32.const 0x3f0))
        (call $put_fx (local.get $ask_px))
        (call $puts (i32.const 0x400))
        (call $put_fx (local.get $ask_px))
        (call $puts (i32.const 0x410))
        (call $put_fx (global.get $buy_below))
        (call $puts (i32.const 0x420))
        (call $put_i64 (local.get $h))
        (call $flush)
        (return)))
    ;; "submit failed: error -2 (refused by the engine); trying again in 5 s"
    (global.set $quiet_until (i64.add (call $now_ms) (global.get $RETRY_MS)))
    (local.set $code (i32.wrap_i64 (i64.sub (i64.const 0) (local.get $h))))
    (if (i32.gt_u (local.get $code) (i32.const 5)) (then (local.set $code (i32.const 0))))
    (call $puts (i32.const 0x560))
    (call $put_i64 (local.get $h))
    (call $puts (i32.const 0x580))
    (call $puts (i32.add (i32.const 0x600) (i32.mul (local.get $code) (i32.const 32))))
    (call $puts (i32.const 0x590))
    (call $flush))

  (func (export "on_fill") (param $handle i64) (param $sym i32) (param $side i32)
                           (param $px i64) (param $qty i64)
    ;; "fill: buy 1.00 @ 0.45, position 1.00"
    (global.set $pos (select (i64.sub (global.get $pos) (local.get $qty))
                             (i64.add (global.get $pos) (local.get $qty))
                             (local.get $side)))
    (global.set $said_full (i32.const 0))
    (call $puts (i32.const 0x430))
    (call $puts (select (i32.const 0x440) (i32.const 0x3e0) (local.get $side)))
    (call $put_fx (local.get $qty))
    (call $puts (i32.const 0x3f0))
    (call $put_fx (local.get $px))
    (call $puts (i32.const 0x450))
    (call $put_fx (global.get $pos))
    (call $flush))

  (func (export "on_order") (param $handle i64) (param $status i32)
    ;; "order 7 filled; position 1.00"
    (if (i64.eq (local.get $handle) (global.get $open))
      (then (global.set $open (i64.const 0))))
    (call $puts (i32.const 0x460))
    (call $put_i64 (local.get $handle))
    (call $puts (select (i32.const 0x470)
                        (select (i32.const 0x480) (i32.const 0x490) (i32.eq (local.get $status) (i32.const 1)))
                        (i32.eqz (local.get $status))))
    (call $puts (i32.const 0x4a0))
    (call $put_fx (global.get $pos))
    (call $flush))
)
