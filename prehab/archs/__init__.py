"""Importing this package registers every architecture (one module per family)."""

from prehab.archs import bert, llama, tiny_mlp, vit  # noqa: F401
