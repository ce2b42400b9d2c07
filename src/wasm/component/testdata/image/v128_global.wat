;; A mutable v128 global that its code sets: JavaScript cannot set it back, so it keeps
;; today's path.
(module (memory 1) (global (mut v128) (v128.const i64x2 0 0))
  (func (global.set 0 (v128.const i64x2 1 1))))
