"""The names of the method's variants, in plain Python: the CLI lists and checks them without
loading torch (`prehab STEP --help`). The modules that implement the variants register exactly
these names (each asserts it at import)."""

SURROGATES = ("nuclear", "nuclear_fro", "stable", "nuclear_rank", "tail")
NEEDS_RATIO = frozenset({"tail"})  # surrogates that price the truncation at a given ratio
SPACES = ("whitened", "weight", "raw")  # what Prehab trains and which matrix the penalty reads
ESTIMATORS = ("exact", "fast")  # how the penalty and its gradient are computed
COMPRESSION_METHODS = ("svd", "svd-llm")
LORA_SCHEDULES = ("joint", "sequential")
