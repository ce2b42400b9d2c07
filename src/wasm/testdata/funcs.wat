;; A WASI command that also exports other functions, for `path#func` entrypoints.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from func\n")
  (data (i32.const 48) "hello from _start\n")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (call $write (i32.const 48) (i32.const 18)))
  (func (export "hello") (call $write (i32.const 16) (i32.const 16)))
  (func (export "exit3") (call $proc_exit (i32.const 3)))
  (func (export "trap") unreachable)
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (global (export "counter") (mut i32) (i32.const 0))
)
