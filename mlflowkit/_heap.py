"""Keeping Python's cyclic garbage collector off the heap that existed before planning or a run.

Planning and running allocate a few objects per step call; with thousands of calls the
collector runs many times, and its older-generation passes walk every object of the process
(imported modules, the user's data), costing milliseconds each. ``set_aside()`` freezes what
exists (``gc.freeze()``) for the duration and hands it back (``gc.unfreeze()``) at the end;
objects made meanwhile are collected as usual. Nothing is done when the collector is off or
something else froze objects already (including an enclosing ``set_aside``).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["set_aside"]


@contextlib.contextmanager
def set_aside() -> Iterator[None]:
    """Freeze the existing heap for the ``with`` block; see the module docstring."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
