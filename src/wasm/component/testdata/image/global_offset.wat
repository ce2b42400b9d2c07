(module (import "env" "base" (global i32)) (memory 1) (data (global.get 0) "x"))
