;; Never returns from on_quote: fuel must interrupt it.
(module
 (memory (export "memory") 1)
 (func (export "on_quote") (param i32 i64 i64 i64 i64) (loop $l (br $l))))
