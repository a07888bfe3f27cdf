"""Low-Rank Prehab."""
__version__ = "0.1.0"
