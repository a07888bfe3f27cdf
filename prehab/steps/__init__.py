"""CLI steps: each module has `add_arguments(parser)` and `run(args) -> record`; setup -> run ->
write outputs, calling only library functions (no step inherits from another)."""

STEPS = ("pretrain", "calibrate", "prehab", "compress", "rehab", "evaluate")
