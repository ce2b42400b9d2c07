;; A wasi:cli command, as a core module that build.sh wraps into a component (the
;; `command` world of wit/wat/world.wit). It writes one line to stdout and one to
;; stderr, then exits with the code given as its last argument (0-255, decimal), or
;; traps if that argument starts with "t". No argument: it returns ok (exit 0).
;; `greet` (a plain exported function) writes one line to stdout.
(module
  (import "wasi:cli/environment@0.2.12" "get-arguments" (func $get_arguments (param i32)))
  (import "wasi:cli/stdout@0.2.12" "get-stdout" (func $get_stdout (result i32)))
  (import "wasi:cli/stderr@0.2.12" "get-stderr" (func $get_stderr (result i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush"
    (func $blocking_write_and_flush (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[resource-drop]output-stream"
    (func $drop_output_stream (param i32)))
  (import "wasi:cli/exit@0.2.12" "exit-with-code" (func $exit_with_code (param i32)))

  (memory (export "memory") 1)
  ;; Bump allocator for the arguments the host writes (never freed: the program is short).
  (global $heap (mut i32) (i32.const 4096))

  ;; 0..8: get-arguments' return area (list pointer, count); 16..28: write results.
  (data (i32.const 64) "hello from a wasi:cli command\n")
  (data (i32.const 128) "a line on stderr\n")
  (data (i32.const 160) "greetings from an exported function\n")

  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
    (param $new_size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $new_size)))
    (block $fits
      (br_if $fits (i32.le_u (global.get $heap) (i32.shl (memory.size) (i32.const 16))))
      (br_if $fits
        (i32.ne
          (memory.grow
            (i32.add
              (i32.shr_u
                (i32.sub (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
                (i32.const 16))
              (i32.const 1)))
          (i32.const -1)))
      unreachable)
    (if (local.get $old)
      (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
    (local.get $ptr))

  ;; Writes bytes [ptr, ptr+len) (at most 4096) to a stream, then drops the stream.
  (func $say (param $stream i32) (param $ptr i32) (param $len i32)
    (call $blocking_write_and_flush
      (local.get $stream) (local.get $ptr) (local.get $len) (i32.const 16))
    (call $drop_output_stream (local.get $stream)))

  ;; The decimal number at [ptr, ptr+len), modulo 256.
  (func $parse (param $ptr i32) (param $len i32) (result i32)
    (local $value i32) (local $digit i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        (local.set $digit (i32.sub (i32.load8_u (local.get $ptr)) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $digit) (i32.const 9)))
        (local.set $value
          (i32.add (i32.mul (local.get $value) (i32.const 10)) (local.get $digit)))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    (i32.and (local.get $value) (i32.const 255)))

  (func (export "wasi:cli/run@0.2.12#run") (result i32)
    (local $count i32) (local $last i32) (local $code i32)
    (call $get_arguments (i32.const 0))
    (local.set $count (i32.load offset=4 (i32.const 0)))
    (call $say (call $get_stdout) (i32.const 64) (i32.const 30))
    (call $say (call $get_stderr) (i32.const 128) (i32.const 17))
    (if (i32.ge_u (local.get $count) (i32.const 2))
      (then
        ;; Each list element is a string: (pointer, length).
        (local.set $last
          (i32.add
            (i32.load (i32.const 0))
            (i32.shl (i32.sub (local.get $count) (i32.const 1)) (i32.const 3))))
        (if (i32.and
              (i32.gt_u (i32.load offset=4 (local.get $last)) (i32.const 0))
              (i32.eq (i32.load8_u (i32.load (local.get $last))) (i32.const 116)))
          (then unreachable))
        (local.set $code
          (call $parse (i32.load (local.get $last)) (i32.load offset=4 (local.get $last))))))
    (if (local.get $code) (then (call $exit_with_code (local.get $code))))
    ;; result::ok
    (i32.const 0))

  (func (export "greet")
    (call $say (call $get_stdout) (i32.const 160) (i32.const 36)))
)
