"""The package's version, in a module of its own so that any layer may read it.

Invariant: imports nothing; ``mlflowkit.__version__`` is this value.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
