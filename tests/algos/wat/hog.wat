;; Grows its memory a page at a time until refused, then traps.
(module
 (memory (export "memory") 1)
 (func (export "on_quote") (param i32 i64 i64 i64 i64)
   (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
   unreachable))
