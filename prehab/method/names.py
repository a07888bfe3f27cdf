"""The names of the method's variants, in plain Python: the CLI lists and checks them without
loading torch (`prehab STEP --help`). The modules that implement the variants register exactly
these names (each asserts it at import)."""

from prehab.errors import UsageError

SURROGATES = ("nuclear", "nuclear_fro", "stable", "nuclear_rank", "tail", "tail_abs")
NEEDS_RATIO = frozenset({"tail", "tail_abs"})  # surrogates that price the truncation at a given ratio
# R(cA) = R(A): they read the spectrum's shape only, so growing the largest singular values lowers
# them as well as shrinking the small ones (docs/method.md, section 3).
SCALE_FREE = frozenset({"nuclear_fro", "stable", "nuclear_rank", "tail"})
# Divided by a constant per matrix fixed at the start of Prehab (its starting ||A||_F^2): the value
# keeps A's scale, and lambda means the same on every layer (surrogates.Anchors).
ANCHORED = frozenset({"tail_abs"})


def check_tail_ratio(surrogate: str, tail_ratio: float | None) -> None:
    """A surrogate that prices a truncation has its ratio, and no other surrogate takes one."""
    if (surrogate in NEEDS_RATIO) != (tail_ratio is not None):
        raise UsageError(f"--surrogate {surrogate} {'needs' if surrogate in NEEDS_RATIO else 'takes no'} "
                         f"--tail-ratio (the compression ratio whose truncation {' and '.join(sorted(NEEDS_RATIO))} "
                         "price)")


SPACES = ("whitened", "weight", "raw")  # what Prehab trains and which matrix the penalty reads
ESTIMATORS = ("exact", "fast", "lagged")  # how the penalty and its gradient are computed
DEFAULT_REFRESH = 16  # `lagged`: the longest lag, in steps, between exact refreshes of a matrix
# How lambda is scaled: `none`, as given; `grad`, by the ratio of the task gradient's norm to the
# penalty gradient's at step 1 (grad_scale.py), so lambda 1 means equal gradient norms at the start.
LAM_SCALES = ("none", "grad")
COMPRESSION_METHODS = ("svd", "svd-llm")
PRECISIONS = ("float32", "bf16")  # what a step computes in (training: autocast; evaluation: cast weights)
LORA_SCHEDULES = ("joint", "sequential")
