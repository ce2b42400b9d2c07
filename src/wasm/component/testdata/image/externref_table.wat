;; A table of externref: only funcref tables are set back, so it keeps today's path.
(module (memory 1) (table 2 externref))
