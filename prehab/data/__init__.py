"""Loaders for the embedded data sets (docs/cli.md, "Embedded data"): plain dicts of tensors."""
