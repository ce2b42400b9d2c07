;; A WASI reactor: `_initialize` must run before its exports are called.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $ready (mut i32) (i32.const 0))
  (data (i32.const 16) "initialized\n")
  (data (i32.const 32) "NOT initialized\n")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_initialize") (global.set $ready (i32.const 1)))
  (func (export "greet")
    (if (global.get $ready)
      (then (call $write (i32.const 16) (i32.const 12)))
      (else (call $write (i32.const 32) (i32.const 16)))))
)
