;; two_leg: buy A at its ask and sell B at its bid when B's bid is at least `edge` above A's ask.
;;
;; Symbols: 0 = A (bought), 1 = B (sold), in the order given at deploy.
;; Params (--param KEY=VALUE):
;;   edge       decimal, required: act when B.bid - A.ask >= edge
;;   qty        decimal, default 1: the size of each leg
;;   max_pairs  integer, default 1: how many pairs to send in all
;;
;; The latest top of both books is kept from on_quote. When the spread is
;; wide enough, no pair is open and fewer than max_pairs were sent, the two
;; legs go out as two `submit` calls (they fire together; nothing waits for
;; leg A -- see assemblyscript/src/two_leg.ts for leg B triggered by A's fill).
;; Fills and ends are tracked per handle; a pair is open until both legs ended.
;; If leg B is refused, leg A is cancelled: never one leg alone on purpose.
;; A refused submit makes the algo wait 5 s before it tries again.
;;
;; Prices and quantities are i64 fixed-point x 1e8 (abi.py). The $put*
;; helpers are the same as in threshold_taker.wat.
;;
;; Memory map (one 64 KiB page):
;;   0x0100-0x07ff  NUL-terminated strings (the data segments below)
;;   0x0800-0x083f  scratch for number formatting
;;   0x1000-0x13ff  the log line being built
(module
  (import "seq" "log" (func $log (param i32 i32)))
  (import "seq" "param" (func $param (param i32 i32 i32 i32) (result i32)))
  (import "seq" "param_i64" (func $param_i64 (param i32 i32 i64) (result i64)))
  (import "seq" "param_1e8" (func $param_1e8 (param i32 i32 i64) (result i64)))
  (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
  (import "seq" "cancel" (func $cancel (param i64) (result i32)))
  (import "seq" "now_ms" (func $now_ms (result i64)))

  (memory (export "memory") 1)

  ;; param keys
  (data (i32.const 0x100) "edge\00")
  (data (i32.const 0x110) "qty\00")
  (data (i32.const 0x120) "max_pairs\00")
  ;; start and parameter errors
  (data (i32.const 0x200) "the param edge is required (e.g. --param edge=0.02 to act when B.bid - A.ask >= 0.02); not trading\00")
  (data (i32.const 0x280) "the param \00")
  (data (i32.const 0x2a0) " is not a decimal: \00")
  (data (i32.const 0x2c0) " is not an integer: \00")
  (data (i32.const 0x2e0) "; not trading\00")
  (data (i32.const 0x2f0) " must be above 0\00")
  (data (i32.const 0x340) "start: edge=\00")
  (data (i32.const 0x350) " qty=\00")
  (data (i32.const 0x360) " max_pairs=\00")
  (data (i32.const 0x380) "; buys symbol 0 (A) at its ask and sells symbol 1 (B) at its bid when B.bid - A.ask >= edge\00")
  ;; decisions
  (data (i32.const 0x400) "pair \00")
  (data (i32.const 0x410) ": buy A \00")
  (data (i32.const 0x420) " @ \00")
  (data (i32.const 0x430) ", sell B \00")
  (data (i32.const 0x440) " (B.bid - A.ask = \00")
  (data (i32.const 0x460) " >= edge \00")
  (data (i32.const 0x470) "), orders \00")
  (data (i32.const 0x480) " and \00")
  ;; fills and ends
  (data (i32.const 0x490) "fill: leg A \00")
  (data (i32.const 0x4a0) "fill: leg B \00")
  (data (i32.const 0x4b0) "buy \00")
  (data (i32.const 0x4c0) "sell \00")
  (data (i32.const 0x4d0) " (leg filled \00")
  (data (i32.const 0x4e0) ")\00")
  (data (i32.const 0x500) "leg A order \00")
  (data (i32.const 0x510) "leg B order \00")
  (data (i32.const 0x520) " filled\00")
  (data (i32.const 0x530) " cancelled\00")
  (data (i32.const 0x540) " rejected\00")
  (data (i32.const 0x550) " done: A filled \00")
  (data (i32.const 0x570) ", B filled \00")
  ;; submit errors
  (data (i32.const 0x580) ": leg A submit failed: error \00")
  (data (i32.const 0x5a0) ": leg B submit failed: error \00")
  (data (i32.const 0x5c0) " (\00")
  (data (i32.const 0x5e0) "; cancelling leg A, order \00")
  (data (i32.const 0x600) "; trying again in 5 s\00")
  (data (i32.const 0x640) "; max_pairs reached, no more pairs\00")
  ;; submit error reasons at 0x700 + 32 * -code (abi.py E_*)
  (data (i32.const 0x700) "unknown error\00")
  (data (i32.const 0x720) "bad argument\00")
  (data (i32.const 0x740) "refused by the engine\00")
  (data (i32.const 0x760) "the algo is stopping\00")
  (data (i32.const 0x780) "rate limit\00")
  (data (i32.const 0x7a0) "too many open orders\00")

  (global $SCRATCH i32 (i32.const 0x800))
  (global $LINE i32 (i32.const 0x1000))
  (global $LINE_END i32 (i32.const 0x1400))
  (global $ONE i64 (i64.const 100000000))              ;; 1.0 in fixed point
  (global $MISSING i64 (i64.const -9223372036854775808)) ;; i64 min: "no such param"
  (global $RETRY_MS i64 (i64.const 5000))

  (global $cur (mut i32) (i32.const 0x1000))  ;; end of the line being built
  (global $enabled (mut i32) (i32.const 0))
  (global $bad (mut i32) (i32.const 0))
  (global $edge (mut i64) (i64.const 0))
  (global $qty (mut i64) (i64.const 0))
  (global $max_pairs (mut i64) (i64.const 0))
  ;; the latest top of book (0 = that side is empty or not seen yet)
  (global $a_ask (mut i64) (i64.const 0))
  (global $b_bid (mut i64) (i64.const 0))
  ;; the current pair
  (global $attempt (mut i64) (i64.const 0))    ;; pair number in the log lines
  (global $pairs (mut i64) (i64.const 0))      ;; pairs sent (both legs accepted)
  (global $ha (mut i64) (i64.const 0))         ;; leg handles
  (global $hb (mut i64) (i64.const 0))
  (global $a_live (mut i32) (i32.const 0))     ;; the leg's order has not ended yet
  (global $b_live (mut i32) (i32.const 0))
  (global $fa (mut i64) (i64.const 0))         ;; filled so far, per leg
  (global $fb (mut i64) (i64.const 0))
  (global $quiet_until (mut i64) (i64.const 0))

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

  ;; "the param KEY is not a ...: VALUE; not trading" (VALUE cut at 64 bytes); sets $bad.
  (func $say_malformed (param $key i32) (param $what i32)
    (local $n i32)
    (call $puts (i32.const 0x280))
    (call $puts (local.get $key))
    (call $puts (local.get $what))
    (local.set $n (call $param (local.get $key) (call $strlen (local.get $key))
                               (global.get $cur) (i32.const 64)))
    (global.set $cur (i32.add (global.get $cur)
                              (select (local.get $n) (i32.const 64) (i32.le_u (local.get $n) (i32.const 64)))))
    (call $puts (i32.const 0x2e0))
    (call $flush)
    (global.set $bad (i32.const 1)))

  (func $is_set (param $key i32) (result i32)
    (i32.ge_s (call $param (local.get $key) (call $strlen (local.get $key)) (i32.const 0) (i32.const 0))
              (i32.const 0)))

  ;; The decimal param $key x 1e8, or $default when it is not set (param_1e8 alone would
  ;; also answer the default for a malformed value: that is logged and sets $bad).
  (func $decimal (param $key i32) (param $default i64) (result i64)
    (local $v i64)
    (local.set $v (call $param_1e8 (local.get $key) (call $strlen (local.get $key)) (global.get $MISSING)))
    (if (i64.ne (local.get $v) (global.get $MISSING)) (then (return (local.get $v))))
    (if (call $is_set (local.get $key)) (then (call $say_malformed (local.get $key) (i32.const 0x2a0))))
    (local.get $default))

  (func $integer (param $key i32) (param $default i64) (result i64)
    (local $v i64)
    (local.set $v (call $param_i64 (local.get $key) (call $strlen (local.get $key)) (global.get $MISSING)))
    (if (i64.ne (local.get $v) (global.get $MISSING)) (then (return (local.get $v))))
    (if (call $is_set (local.get $key)) (then (call $say_malformed (local.get $key) (i32.const 0x2c0))))
    (local.get $default))

  (func $require_positive (param $key i32) (param $v i64)
    (if (i64.le_s (local.get $v) (i64.const 0))
      (then
        (call $puts (i32.const 0x280))
        (call $puts (local.get $key))
        (call $puts (i32.const 0x2f0))
        (call $puts (i32.const 0x2e0))
        (call $flush)
        (global.set $bad (i32.const 1)))))

  (func (export "init")
    (global.set $edge (call $decimal (i32.const 0x100) (global.get $MISSING)))
    (if (i64.eq (global.get $edge) (global.get $MISSING))
      (then
        (if (i32.eqz (global.get $bad))
          (then
            (call $puts (i32.const 0x200))
            (call $flush)))
        (return)))
    (global.set $qty (call $decimal (i32.const 0x110) (global.get $ONE)))
    (call $require_positive (i32.const 0x110) (global.get $qty))
    (global.set $max_pairs (call $integer (i32.const 0x120) (i64.const 1)))
    (call $require_positive (i32.const 0x120) (global.get $max_pairs))
    (if (global.get $bad) (then (return)))
    ;; "start: edge=0.02 qty=1.00 max_pairs=1; buys symbol 0 (A) at its ask and sells ..."
    (call $puts (i32.const 0x340))
    (call $put_fx (global.get $edge))
    (call $puts (i32.const 0x350))
    (call $put_fx (global.get $qty))
    (call $puts (i32.const 0x360))
    (call $put_i64 (global.get $max_pairs))
    (call $puts (i32.const 0x380))
    (call $flush)
    (global.set $enabled (i32.const 1)))

  ;; ---- events ---------------------------------------------------------------------------

  ;; "... error -2 (refused by the engine)"
  (func $put_error (param $h i64)
    (local $code i32)
    (local.set $code (i32.wrap_i64 (i64.sub (i64.const 0) (local.get $h))))
    (if (i32.gt_u (local.get $code) (i32.const 5)) (then (local.set $code (i32.const 0))))
    (call $put_i64 (local.get $h))
    (call $puts (i32.const 0x5c0))
    (call $puts (i32.add (i32.const 0x700) (i32.mul (local.get $code) (i32.const 32))))
    (call $puts (i32.const 0x4e0)))

  (func $pair_prefix
    (call $puts (i32.const 0x400))
    (call $put_i64 (global.get $attempt)))

  (func $try_pair (param $a_ask i64) (param $b_bid i64)
    (local $ha i64)
    (local $hb i64)
    (global.set $attempt (i64.add (global.get $attempt) (i64.const 1)))
    (global.set $fa (i64.const 0))
    (global.set $fb (i64.const 0))
    (local.set $ha (call $submit (i32.const 0) (i32.const 0) (local.get $a_ask) (global.get $qty) (i32.const 0)))
    (if (i64.le_s (local.get $ha) (i64.const 0))
      (then
        ;; "pair 1: leg A submit failed: error -2 (refused by the engine); trying again in 5 s"
        (global.set $quiet_until (i64.add (call $now_ms) (global.get $RETRY_MS)))
        (call $pair_prefix)
        (call $puts (i32.const 0x580))
        (call $put_error (local.get $ha))
        (call $puts (i32.const 0x600))
        (call $flush)
        (return)))
    (global.set $ha (local.get $ha))
    (global.set $a_live (i32.const 1))
    (local.set $hb (call $submit (i32.const 1) (i32.const 1) (local.get $b_bid) (global.get $qty) (i32.const 0)))
    (if (i64.le_s (local.get $hb) (i64.const 0))
      (then
        ;; "pair 1: leg B submit failed: error -4 (rate limit); cancelling leg A, order 3; ..."
        (global.set $quiet_until (i64.add (call $now_ms) (global.get $RETRY_MS)))
        (drop (call $cancel (local.get $ha)))
        (call $pair_prefix)
        (call $puts (i32.const 0x5a0))
        (call $put_error (local.get $hb))
        (call $puts (i32.const 0x5e0))
        (call $put_i64 (local.get $ha))
        (call $puts (i32.const 0x600))
        (call $flush)
        (return)))
    (global.set $hb (local.get $hb))
    (global.set $b_live (i32.const 1))
    (global.set $pairs (i64.add (global.get $pairs) (i64.const 1)))
    ;; "pair 1: buy A 1.00 @ 0.45, sell B 1.00 @ 0.50 (B.bid - A.ask = 0.05 >= edge 0.02), orders 1 and 2"
    (call $pair_prefix)
    (call $puts (i32.const 0x410))
    (call $put_fx (global.get $qty))
    (call $puts (i32.const 0x420))
    (call $put_fx (local.get $a_ask))
    (call $puts (i32.const 0x430))
    (call $put_fx (global.get $qty))
    (call $puts (i32.const 0x420))
    (call $put_fx (local.get $b_bid))
    (call $puts (i32.const 0x440))
    (call $put_fx (i64.sub (local.get $b_bid) (local.get $a_ask)))
    (call $puts (i32.const 0x460))
    (call $put_fx (global.get $edge))
    (call $puts (i32.const 0x470))
    (call $put_i64 (local.get $ha))
    (call $puts (i32.const 0x480))
    (call $put_i64 (local.get $hb))
    (call $flush))

  (func (export "on_quote") (param $sym i32) (param $bid_px i64) (param $bid_qty i64)
                            (param $ask_px i64) (param $ask_qty i64)
    (if (i32.eq (local.get $sym) (i32.const 0)) (then (global.set $a_ask (local.get $ask_px))))
    (if (i32.eq (local.get $sym) (i32.const 1)) (then (global.set $b_bid (local.get $bid_px))))
    (if (i32.eqz (global.get $enabled)) (then (return)))
    (if (i64.le_s (global.get $a_ask) (i64.const 0)) (then (return)))   ;; A has no ask
    (if (i64.le_s (global.get $b_bid) (i64.const 0)) (then (return)))   ;; B has no bid
    (if (i32.or (global.get $a_live) (global.get $b_live)) (then (return)))
    (if (i64.ge_s (global.get $pairs) (global.get $max_pairs)) (then (return)))
    (if (i64.lt_s (i64.sub (global.get $b_bid) (global.get $a_ask)) (global.get $edge)) (then (return)))
    (if (i64.lt_s (call $now_ms) (global.get $quiet_until)) (then (return)))
    (call $try_pair (global.get $a_ask) (global.get $b_bid)))

  (func (export "on_fill") (param $handle i64) (param $sym i32) (param $side i32)
                           (param $px i64) (param $qty i64)
    (local $leg_filled i64)
    ;; "fill: leg A buy 1.00 @ 0.45 (leg filled 1.00)"
    (if (i64.eq (local.get $handle) (global.get $ha))
      (then
        (global.set $fa (i64.add (global.get $fa) (local.get $qty)))
        (local.set $leg_filled (global.get $fa))
        (call $puts (i32.const 0x490)))
      (else
        (if (i64.ne (local.get $handle) (global.get $hb)) (then (return)))
        (global.set $fb (i64.add (global.get $fb) (local.get $qty)))
        (local.set $leg_filled (global.get $fb))
        (call $puts (i32.const 0x4a0))))
    (call $puts (select (i32.const 0x4c0) (i32.const 0x4b0) (local.get $side)))
    (call $put_fx (local.get $qty))
    (call $puts (i32.const 0x420))
    (call $put_fx (local.get $px))
    (call $puts (i32.const 0x4d0))
    (call $put_fx (local.get $leg_filled))
    (call $puts (i32.const 0x4e0))
    (call $flush))

  (func (export "on_order") (param $handle i64) (param $status i32)
    ;; "leg A order 1 filled"
    (if (i32.and (global.get $a_live) (i64.eq (local.get $handle) (global.get $ha)))
      (then
        (global.set $a_live (i32.const 0))
        (call $puts (i32.const 0x500)))
      (else
        (if (i32.eqz (i32.and (global.get $b_live) (i64.eq (local.get $handle) (global.get $hb))))
          (then (return)))
        (global.set $b_live (i32.const 0))
        (call $puts (i32.const 0x510))))
    (call $put_i64 (local.get $handle))
    (call $puts (select (i32.const 0x520)
                        (select (i32.const 0x530) (i32.const 0x540) (i32.eq (local.get $status) (i32.const 1)))
                        (i32.eqz (local.get $status))))
    (call $flush)
    (if (i32.or (global.get $a_live) (global.get $b_live)) (then (return)))
    ;; "pair 1 done: A filled 1.00, B filled 1.00[; max_pairs reached, no more pairs]"
    (call $pair_prefix)
    (call $puts (i32.const 0x550))
    (call $put_fx (global.get $fa))
    (call $puts (i32.const 0x570))
    (call $put_fx (global.get $fb))
    (if (i64.ge_s (global.get $pairs) (global.get $max_pairs))
      (then (call $puts (i32.const 0x640))))
    (call $flush))
)
