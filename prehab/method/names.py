"""The names of the method's variants, in plain Python: the CLI lists and checks them without
loading torch (`prehab STEP --help`). The modules that implement the variants register exactly
these names (each asserts it at import)."""

from prehab.errors import UsageError

SURROGATES = ("nuclear", "nuclear_fro", "stable", "nuclear_rank", "tail")
NEEDS_RATIO = frozenset({"tail"})  # surrogates that price the truncation at a given ratio


def check_tail_ratio(surrogate: str, tail_ratio: float | None) -> None:
    """A surrogate that prices a truncation has its ratio, and no other surrogate takes one."""
    if (surrogate in NEEDS_RATIO) != (tail_ratio is not None):
        raise UsageError(f"--surrogate {surrogate} {'needs' if surrogate in NEEDS_RATIO else 'takes no'} "
                         "--tail-ratio (the compression ratio whose truncation `tail` prices)")


SPACES = ("whitened", "weight", "raw")  # what Prehab trains and which matrix the penalty reads
ESTIMATORS = ("exact", "fast", "lagged")  # how the penalty and its gradient are computed
DEFAULT_REFRESH = 16  # `lagged`: the longest lag, in steps, between exact refreshes of a matrix
COMPRESSION_METHODS = ("svd", "svd-llm")
LORA_SCHEDULES = ("joint", "sequential")
