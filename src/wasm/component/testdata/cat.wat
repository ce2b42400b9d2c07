;; A wasi:cli command, as a core module that build.sh wraps into a component (the
;; `cat` world of wit/wat/world.wit): copies its stdin to its stdout until stdin is
;; closed, then returns ok (exit 0).
(module
  (import "wasi:cli/stdin@0.2.12" "get-stdin" (func $get_stdin (result i32)))
  (import "wasi:cli/stdout@0.2.12" "get-stdout" (func $get_stdout (result i32)))
  (import "wasi:io/streams@0.2.12" "[method]input-stream.blocking-read"
    (func $blocking_read (param i32 i64 i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush"
    (func $blocking_write_and_flush (param i32 i32 i32 i32)))

  (memory (export "memory") 1)
  ;; Bump allocator for the lists the host writes: reset before each read.
  (global $heap (mut i32) (i32.const 4096))

  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
    (param $new_size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $new_size)))
    (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
      (then unreachable))
    (local.get $ptr))

  ;; 0..12: blocking-read's result<list<u8>, stream-error> (tag; list pointer, length);
  ;; 16..28: blocking-write-and-flush's result (ignored).
  (func (export "wasi:cli/run@0.2.12#run") (result i32)
    (local $in i32) (local $out i32)
    (local.set $in (call $get_stdin))
    (local.set $out (call $get_stdout))
    (block $closed
      (loop $next
        (global.set $heap (i32.const 4096))
        (call $blocking_read (local.get $in) (i64.const 4096) (i32.const 0))
        (br_if $closed (i32.load8_u (i32.const 0)))
        (call $blocking_write_and_flush
          (local.get $out) (i32.load (i32.const 4)) (i32.load (i32.const 8)) (i32.const 16))
        (br $next)))
    ;; result::ok
    (i32.const 0))
)
