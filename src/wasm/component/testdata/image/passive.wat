;; Passive data and element segments: `init` copies passive data to memory, `drop` drops it.
(module
  (memory 1)
  (data (i32.const 16) "active")
  (data $p "passive")
  (func (export "init") (result i32) (memory.init $p (i32.const 100) (i32.const 0) (i32.const 7)) (i32.load8_u (i32.const 100)))
  (func (export "drop") (data.drop $p))
  (func (export "peek") (param i32) (result i32) (i32.load8_u (local.get 0))))
