"""patchbay: an operator that manages and verifies connections to external data systems."""

__version__ = "0.1.0"
