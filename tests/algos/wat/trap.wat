;; Traps on its first quote.
(module
 (memory (export "memory") 1)
 (func (export "on_quote") (param i32 i64 i64 i64 i64) unreachable))
