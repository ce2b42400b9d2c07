;; A start function: recycling would skip it, so instances are made fresh (over the image).
(module (memory 1) (global $g (mut i32) (i32.const 0)) (data (i32.const 8) "hi")
  (func $init (global.set $g (i32.const 1)) (i32.store8 (i32.const 9) (i32.const 0x6f)))
  (start $init)
  (func (export "peek") (param i32) (result i32) (i32.load8_u (local.get 0))))
