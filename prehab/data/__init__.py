"""Loaders for the embedded data sets (../shared/DATA.md): plain dicts of tensors."""
