(module (memory 1 2 shared) (func (export "f") (result i32) (i32.const 1)))
