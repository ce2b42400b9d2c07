;; A wasi:http proxy (the `http-hello` world) that tries to leak state across requests,
;; for the isolation tests of recycled instances. Each request first probes for what an
;; earlier one could have left, then leaves a secret everywhere it can:
;; - linear memory: over a data segment (1024), in the heap (4096), past the data (200000);
;; - an internal mutable global;
;; - its table: slot 1 replaced, slot 3 (null at start) filled;
;; It also has a table and a mutable global that no code writes (so they are not set
;; back when an instance is recycled); the probe checks they still hold what they did.
;; - host resources: a `fields` it never drops, and a second response body it writes
;;   "SECRET" to and never finishes (a pending body).
;; The response body is three characters: `@` + the bits found (1 memory, 2 global,
;; 4 table, 8 memory size, 16 grown memory not zero, 32 memory.grow past the maximum
;; did not fail), `@` + the handle of its leaked `fields`, `@` + the handle of its
;; pending body's stream: a fresh instance always answers the same three.
;; `/grow` also grows the memory from 4 to 6 pages, checks the new pages read zeros and
;; leaves a secret in each, and checks its maximum (8 pages) holds; `/trap` executes
;; `unreachable` after leaking; `/fill` fills 2 bytes across the end of its memory
;; (4 pages), which traps out of bounds.
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

  (memory (export "memory") 4 8)
  (global $heap (mut i32) (i32.const 8192))
  (global $g (mut i32) (i32.const 7))
  (global $untouched (mut i32) (i32.const 9))
  (table $t 4 funcref)
  (elem (i32.const 0) $one $two)
  (table $read_only 2 funcref)
  (elem (table $read_only) (i32.const 0) func $two $one)
  (type $ret (func (result i32)))
  (func $one (result i32) (i32.const 1))
  (func $two (result i32) (i32.const 2))
  (func $evil (result i32) (i32.const 666))
  (elem declare func $evil)

  (data (i32.const 1024) "pristine-image-bytes")
  (data (i32.const 1056) "/grow")
  (data (i32.const 1064) "/trap")
  (data (i32.const 1072) "SECRET")
  (data (i32.const 1080) "/fill")

  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
    (param $new_size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $new_size)))
    (if (i32.gt_u (global.get $heap) (i32.const 196608)) (then unreachable))
    (if (local.get $old)
      (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
    (local.get $ptr))

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

  ;; What an earlier request left (see the header).
  (func $probe (result i32) (local $r i32)
    (if (i32.ne (i32.load (i32.const 1024)) (i32.const 0x73697270)) ;; "pris"
      (then (local.set $r (i32.or (local.get $r) (i32.const 1)))))
    (if (i32.or (i32.load (i32.const 4096)) (i32.load (i32.const 200000)))
      (then (local.set $r (i32.or (local.get $r) (i32.const 1)))))
    (if (i32.ne (global.get $g) (i32.const 7))
      (then (local.set $r (i32.or (local.get $r) (i32.const 2)))))
    (if (i32.ne (call_indirect (type $ret) (i32.const 1)) (i32.const 2))
      (then (local.set $r (i32.or (local.get $r) (i32.const 4)))))
    (if (i32.ne (call_indirect $read_only (type $ret) (i32.const 0)) (i32.const 2))
      (then (local.set $r (i32.or (local.get $r) (i32.const 4)))))
    (if (i32.ne (global.get $untouched) (i32.const 9))
      (then (local.set $r (i32.or (local.get $r) (i32.const 2)))))
    (if (i32.eqz (ref.is_null (table.get $t (i32.const 3))))
      (then (local.set $r (i32.or (local.get $r) (i32.const 4)))))
    (if (i32.ne (memory.size) (i32.const 4))
      (then (local.set $r (i32.or (local.get $r) (i32.const 8)))))
    (local.get $r))

  (func (export "wasi:http/incoming-handler@0.2.12#handle") (param $request i32)
    (param $outparam i32)
    (local $found i32) (local $ptr i32) (local $len i32) (local $fields i32)
    (local $response i32) (local $body i32) (local $stream i32) (local $pending i32)
    (local $old i32)
    (local.set $found (call $probe))
    ;; option<string> at 0: tag (u8), pointer at 4, length at 8.
    (call $path_with_query (local.get $request) (i32.const 0))
    (local.set $ptr (i32.load (i32.const 4)))
    (local.set $len (i32.load (i32.const 8)))
    (call $drop_incoming_request (local.get $request))
    ;; Leave a secret everywhere.
    (i32.store (i32.const 1024) (i32.const 0x5ec2e7))
    (i32.store (i32.const 4096) (i32.const 0x5ec2e7))
    (i32.store (i32.const 200000) (i32.const 0x5ec2e7))
    (global.set $g (i32.const 0x5ec2e7))
    (table.set $t (i32.const 1) (ref.func $evil))
    (table.set $t (i32.const 3) (ref.func $evil))
    (local.set $fields (call $new_fields))
    (call $outgoing_response_body
      (call $new_outgoing_response (call $new_fields)) (i32.const 16))
    (call $outgoing_body_write (i32.load (i32.const 20)) (i32.const 16))
    (local.set $pending (i32.load (i32.const 20)))
    (call $blocking_write_and_flush (local.get $pending) (i32.const 1072) (i32.const 6)
      (i32.const 16))
    (if (call $equals (local.get $ptr) (local.get $len) (i32.const 1056) (i32.const 5))
      (then
        (local.set $old (memory.grow (i32.const 2)))
        (if (i32.ne (local.get $old) (i32.const 4))
          (then (local.set $found (i32.or (local.get $found) (i32.const 8)))))
        (if (i32.or (i32.load (i32.const 262244)) (i32.load (i32.const 327780)))
          (then (local.set $found (i32.or (local.get $found) (i32.const 16)))))
        (i32.store (i32.const 262244) (i32.const 0x5ec2e7))
        (i32.store (i32.const 327780) (i32.const 0x5ec2e7))
        (if (i32.ne (memory.grow (i32.const 3)) (i32.const -1))
          (then (local.set $found (i32.or (local.get $found) (i32.const 32)))))
        (if (i32.ne (memory.size) (i32.const 6))
          (then (local.set $found (i32.or (local.get $found) (i32.const 8)))))))
    (if (call $equals (local.get $ptr) (local.get $len) (i32.const 1064) (i32.const 5))
      (then unreachable))
    (if (call $equals (local.get $ptr) (local.get $len) (i32.const 1080) (i32.const 5))
      (then (memory.fill (i32.const 262143) (i32.const 0) (i32.const 2))))
    ;; The report.
    (i32.store8 (i32.const 32) (i32.add (i32.const 64) (local.get $found)))
    (i32.store8 (i32.const 33) (i32.add (i32.const 64) (local.get $fields)))
    (i32.store8 (i32.const 34) (i32.add (i32.const 64) (local.get $pending)))
    (local.set $response (call $new_outgoing_response (call $new_fields)))
    (call $outgoing_response_body (local.get $response) (i32.const 0))
    (local.set $body (i32.load (i32.const 4)))
    (call $outgoing_body_write (local.get $body) (i32.const 0))
    (local.set $stream (i32.load (i32.const 4)))
    (call $response_outparam_set (local.get $outparam)
      (i32.const 0) (local.get $response) (i32.const 0) (i64.const 0)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $blocking_write_and_flush (local.get $stream) (i32.const 32) (i32.const 3)
      (i32.const 16))
    (call $drop_output_stream (local.get $stream))
    (call $outgoing_body_finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 16)))
)
