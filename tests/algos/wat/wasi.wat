;; Imports WASI: outside the algo ABI, refused at deploy.
(module
 (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
 (memory (export "memory") 1)
 (func (export "on_quote") (param i32 i64 i64 i64 i64)))
