;; Imports a host function that is not WASI: the runner must refuse it at Create.
(module
  (import "env" "host_log" (func (param i32)))
  (memory (export "memory") 1)
  (func (export "_start"))
)
