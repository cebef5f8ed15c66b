"""Recordings gateway: authenticated, range-aware streaming of meeting recordings."""

__version__ = "0.1.0"
