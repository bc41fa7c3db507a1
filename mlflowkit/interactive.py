"""Where a run is watched from: a terminal, a notebook, or neither (a pipe, a log file).

Deciding this is cheap and imports nothing, so that a run nobody watches never loads the
display code (:mod:`mlflowkit.display`, ~10 ms of imports) just to learn that it shows nothing.
"""

from __future__ import annotations

import sys

__all__ = ["in_notebook", "wants_progress"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (an IPython shell that talks to a front end)."""
    module = sys.modules.get("IPython")
    if module is None:
        return False
    try:
        shell = module.get_ipython()
    except Exception:  # an IPython too old or half-initialized to answer: not a notebook
        return False
    if shell is None:
        return False
    return type(shell).__name__ == "ZMQInteractiveShell" or hasattr(shell, "kernel")


def wants_progress(progress: bool | None) -> bool:
    """Whether to show progress: as asked, or by default in a notebook or a terminal."""
    if progress is None:
        return in_notebook() or sys.stderr.isatty()
    return progress
