"""The version of mlflowkit (layer 0: importable from anywhere, imports nothing)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
