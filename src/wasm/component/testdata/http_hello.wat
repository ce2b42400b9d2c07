;; A minimal wasi:http proxy, as a core module that build.sh wraps into a component (the
;; `http-hello` world of wit/wat/world.wit): small and quick to instantiate, for load
;; tests. `/trap` executes `unreachable`; `/count` answers a module-global counter
;; (always 1 with a fresh instance per request); `/log` also writes a line to the
;; container's stdout and one to its stderr; anything else answers the hello text.
(module
  (import "wasi:http/types@0.2.12" "[method]incoming-request.path-with-query"
    (func $path_with_query (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[resource-drop]incoming-request"
    (func $drop_incoming_request (param i32)))
  (import "wasi:http/types@0.2.12" "[constructor]fields" (func $new_fields (result i32)))
  (import "wasi:http/types@0.2.12" "[constructor]outgoing-response"
    (func $new_outgoing_response (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-response.body"
    (func $outgoing_response_body (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-body.write"
    (func $outgoing_body_write (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]response-outparam.set"
    (func $response_outparam_set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]outgoing-body.finish"
    (func $outgoing_body_finish (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush"
    (func $blocking_write_and_flush (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[resource-drop]output-stream"
    (func $drop_output_stream (param i32)))
  (import "wasi:cli/stdout@0.2.12" "get-stdout" (func $get_stdout (result i32)))
  (import "wasi:cli/stderr@0.2.12" "get-stderr" (func $get_stderr (result i32)))

  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $count (mut i32) (i32.const 0))

  ;; 0..16: return areas; 32: the counter's digit.
  (data (i32.const 64) "Hello, this is your first wasi:http/proxy world!\n")
  (data (i32.const 128) "/trap")
  (data (i32.const 136) "/count")
  (data (i32.const 144) "/log")
  (data (i32.const 160) "a log line from a wasi:http request\n")
  (data (i32.const 200) "a stderr line from a wasi:http request\n")

  ;; Writes [ptr, ptr+len) to `stream` and drops it.
  (func $say (param $stream i32) (param $ptr i32) (param $len i32)
    (call $blocking_write_and_flush (local.get $stream) (local.get $ptr) (local.get $len)
      (i32.const 16))
    (call $drop_output_stream (local.get $stream)))

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

  ;; True if the string [ptr, ptr+len) equals [lit, lit+litlen).
  (func $equals (param $ptr i32) (param $len i32) (param $lit i32) (param $litlen i32)
    (result i32)
    (if (i32.ne (local.get $len) (local.get $litlen)) (then (return (i32.const 0))))
    (block $differ
      (loop $next
        (if (i32.eqz (local.get $len)) (then (return (i32.const 1))))
        (br_if $differ
          (i32.ne (i32.load8_u (local.get $ptr)) (i32.load8_u (local.get $lit))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (local.set $lit (i32.add (local.get $lit) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  (func (export "wasi:http/incoming-handler@0.2.12#handle") (param $request i32)
    (param $outparam i32)
    (local $ptr i32) (local $len i32) (local $response i32) (local $body i32)
    (local $stream i32) (local $text i32) (local $textlen i32)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (local.set $text (i32.const 64))
    (local.set $textlen (i32.const 49))
    ;; option<string> at 0: tag (u8), pointer at 4, length at 8.
    (call $path_with_query (local.get $request) (i32.const 0))
    (if (i32.load8_u (i32.const 0))
      (then
        (local.set $ptr (i32.load (i32.const 4)))
        (local.set $len (i32.load (i32.const 8)))
        (if (call $equals (local.get $ptr) (local.get $len) (i32.const 128) (i32.const 5))
          (then unreachable))
        (if (call $equals (local.get $ptr) (local.get $len) (i32.const 136) (i32.const 6))
          (then
            (i32.store8 (i32.const 32)
              (i32.add (i32.const 48) (i32.rem_u (global.get $count) (i32.const 10))))
            (local.set $text (i32.const 32))
            (local.set $textlen (i32.const 1))))
        (if (call $equals (local.get $ptr) (local.get $len) (i32.const 144) (i32.const 4))
          (then
            (call $say (call $get_stdout) (i32.const 160) (i32.const 36))
            (call $say (call $get_stderr) (i32.const 200) (i32.const 39))))))
    (call $drop_incoming_request (local.get $request))
    (local.set $response (call $new_outgoing_response (call $new_fields)))
    ;; result<outgoing-body> at 0: tag, handle at 4.
    (call $outgoing_response_body (local.get $response) (i32.const 0))
    (local.set $body (i32.load (i32.const 4)))
    (call $outgoing_body_write (local.get $body) (i32.const 0))
    (local.set $stream (i32.load (i32.const 4)))
    ;; result::ok(response)
    (call $response_outparam_set (local.get $outparam)
      (i32.const 0) (local.get $response) (i32.const 0) (i64.const 0)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $blocking_write_and_flush
      (local.get $stream) (local.get $text) (local.get $textlen) (i32.const 16))
    (call $drop_output_stream (local.get $stream))
    ;; option<trailers>::none
    (call $outgoing_body_finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 16)))
)
