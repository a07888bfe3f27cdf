"""Loaders for the embedded data sets (README, "Embedded data"): plain dicts of tensors."""
