(module (global (mut i32) (i32.const 0)) (func (export "f") (result i32) (i32.const 1)))
