;; A module without libc: `_start` calls proc_exit(7); `yield` calls sched_yield and
;; needs no memory (the module has none).
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
  (func (export "_start")
    (call $proc_exit (i32.const 7))
    unreachable)
  (func (export "yield") (result i32)
    (call $sched_yield)))
