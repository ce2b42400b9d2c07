;; A glue test component (the `abi` world of wit/abi/world.wit): each `test:abi/guest`
;; function passes its core arguments straight to the `test:abi/host` import of the
;; same name and returns what it returns, so whatever glue instantiates it lowers
;; every value into the guest and lifts it back out, both ways. Results wider than one
;; core value come back through RET, a static return area. Also: resources (own and
;; borrowed handles, drops) and `peek`/`poke` of raw memory.
(module
  (type $i32_to_void (func (param i32)))
  (type $str_to_ret (func (param i32 i32 i32)))
  (import "test:abi/host" "prims"
    (func $prims (param i32 i32 i32 i32 i32 i32 i32 i64 i64 f32 f64 i32 i32)))
  (import "test:abi/host" "text" (func $text (type $str_to_ret)))
  (import "test:abi/host" "bytes" (func $bytes (type $str_to_ret)))
  (import "test:abi/host" "strings" (func $strings (type $str_to_ret)))
  (import "test:abi/host" "numbers" (func $numbers (type $str_to_ret)))
  (import "test:abi/host" "points" (func $points (param i32 f64 i32 i32 i32)))
  (import "test:abi/host" "shapes" (func $shapes (param i32 i64 i64 i32 i32 i32)))
  (import "test:abi/host" "colors" (func $colors (param i32) (result i32)))
  (import "test:abi/host" "perm" (func $perm (param i32) (result i32)))
  (import "test:abi/host" "maybe" (func $maybe (param i32 i32 i32 i32)))
  (import "test:abi/host" "either" (func $either (param i32 i32 i32 i32)))
  (import "test:abi/host" "attempt" (func $attempt (param i32 i32)))
  (import "test:abi/host" "many" (func $many (param i32) (result i64)))
  (import "test:abi/host" "[constructor]thing" (func $new_thing (param i32 i32) (result i32)))
  (import "test:abi/host" "[method]thing.name" (func $thing_name (param i32 i32)))
  (import "test:abi/host" "[static]thing.merge" (func $thing_merge (param i32 i32) (result i32)))
  (import "test:abi/host" "[resource-drop]thing" (func $drop_thing (type $i32_to_void)))

  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  ;; The return area: 64 bytes, 8-aligned.
  (global $ret i32 (i32.const 1024))

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

  (func (export "test:abi/guest#prims")
    (param i32 i32 i32 i32 i32 i32 i32 i64 i64 f32 f64 i32) (result i32)
    (call $prims (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)
      (local.get 5) (local.get 6) (local.get 7) (local.get 8) (local.get 9) (local.get 10)
      (local.get 11) (global.get $ret))
    (global.get $ret))
  (func (export "test:abi/guest#text") (param i32 i32) (result i32)
    (call $text (local.get 0) (local.get 1) (global.get $ret))
    (global.get $ret))
  (func (export "test:abi/guest#bytes") (param i32 i32) (result i32)
    (call $bytes (local.get 0) (local.get 1) (global.get $ret))
    (global.get $ret))
  (func (export "test:abi/guest#strings") (param i32 i32) (result i32)
    (call $strings (local.get 0) (local.get 1) (global.get $ret))
    (global.get $ret))
  (func (export "test:abi/guest#numbers") (param i32 i32) (result i32)
    (call $numbers (local.get 0) (local.get 1) (global.get $ret))
    (global.get $ret))
  (func (export "test:abi/guest#points") (param i32 f64 i32 i32) (result i32)
    (call $points (local.get 0) (local.get 1) (local.get 2) (local.get 3) (global.get $ret))
    (global.get $ret))
  (func (export "test:abi/guest#shapes") (param i32 i64 i64 i32 i32) (result i32)
    (call $shapes (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)
      (global.get $ret))
    (global.get $ret))
  (func (export "test:abi/guest#colors") (param i32) (result i32)
    (call $colors (local.get 0)))
  (func (export "test:abi/guest#perm") (param i32) (result i32)
    (call $perm (local.get 0)))
  (func (export "test:abi/guest#maybe") (param i32 i32 i32) (result i32)
    (call $maybe (local.get 0) (local.get 1) (local.get 2) (global.get $ret))
    (global.get $ret))
  (func (export "test:abi/guest#either") (param i32 i32 i32) (result i32)
    (call $either (local.get 0) (local.get 1) (local.get 2) (global.get $ret))
    (global.get $ret))
  (func (export "test:abi/guest#attempt") (param i32) (result i32)
    (call $attempt (local.get 0) (global.get $ret))
    (global.get $ret))
  ;; 17 parameters: both sides pass a pointer to them in memory.
  (func (export "test:abi/guest#many") (param i32) (result i64)
    (call $many (local.get 0)))
  (func (export "test:abi/guest#new-thing") (param i32 i32) (result i32)
    (call $new_thing (local.get 0) (local.get 1)))
  ;; An owned handle in, a borrow of it to the method, then dropped.
  (func (export "test:abi/guest#thing-name") (param $t i32) (result i32)
    (call $thing_name (local.get $t) (global.get $ret))
    (call $drop_thing (local.get $t))
    (global.get $ret))
  ;; `a` moves to the host, `b` is lent to it, then dropped.
  (func (export "test:abi/guest#merge-things") (param $a i32) (param $b i32) (result i32)
    (local $merged i32)
    (local.set $merged (call $thing_merge (local.get $a) (local.get $b)))
    (call $drop_thing (local.get $b))
    (local.get $merged))
  (func (export "test:abi/guest#peek") (param i32) (result i32)
    (i32.load (local.get 0)))
  (func (export "test:abi/guest#poke") (param i32 i32)
    (i32.store (local.get 0) (local.get 1)))
)
