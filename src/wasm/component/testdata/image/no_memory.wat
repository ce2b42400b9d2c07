;; No memory: only a global (set by its code) to set back.
(module (global (mut i32) (i32.const 0))
  (func (export "f") (result i32) (global.set 0 (i32.const 2)) (i32.const 1)))
