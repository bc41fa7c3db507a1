"""Helpers shared by the executors that run steps in other processes (``processes``, ``dask``).

Invariants
----------
* Whatever crosses a process boundary is made portable first: an exception that cannot be
  pickled is replaced by a ``RemoteError`` carrying its type name, message and nothing else,
  so a result always arrives (the traceback text travels separately, as a string).
* A value handle is *location-free* when any process that can open the store can resolve it
  (``Stored`` and ``Derived`` over location-free inputs); only such handles may be handed back
  instead of a value.
* Nothing here imports a heavy library; ``cloudpickle`` is imported on first use.
"""

from __future__ import annotations

import io
import pickle
from typing import TYPE_CHECKING, Any

from mlflowkit.executors.base import Derived, Input, Stored
from mlflowkit.placeholders import leaves

if TYPE_CHECKING:
    from mlflowkit.executors.base import Task
    from mlflowkit.store.base import ArtifactStore

__all__ = [
    "RemoteError",
    "derivable",
    "location_free",
    "portable_error",
    "store_is_shareable",
    "timeout_error",
]


class RemoteError(Exception):
    """Stands for an exception raised where a step ran that could not be sent back as is.

    Attributes
    ----------
    type_name:
        Qualified name of the original exception's class.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name

    def __reduce__(self) -> tuple[Any, ...]:
        text = str(self)
        prefix = f"{self.type_name}: "
        return (RemoteError, (self.type_name, text[len(prefix) :]))


def portable_error(exc: BaseException | None) -> BaseException | None:
    """``exc`` itself when it survives a pickle round trip, else a ``RemoteError`` for it."""
    if exc is None:
        return None
    import cloudpickle

    try:
        blob = cloudpickle.dumps(exc)
        pickle.loads(blob)
    except Exception:
        cls = type(exc)
        try:
            message = str(exc)
        except Exception:
            message = "<the exception's message could not be rendered>"
        return RemoteError(f"{cls.__module__}.{cls.__qualname__}", message)
    return exc


def location_free(template: Any) -> bool:
    """Whether every ``Input`` in ``template`` can be resolved in any process with the store."""
    return all(_handle_location_free(item.handle) for item in leaves(template, Input))


def _handle_location_free(handle: Any) -> bool:
    if isinstance(handle, Stored):
        return True
    if isinstance(handle, Derived):
        return location_free(handle.args)
    return False


def derivable(task: Task) -> bool:
    """Whether ``Derived(task.step, task.args)`` may stand for the task's output elsewhere.

    True for the tasks the scheduler itself would answer with a ``Derived`` handle on a cache
    hit (a cache entry is written but the value is not stored: ``ref[0]`` and other cheap
    views), provided their inputs are location-free.
    """
    return task.cache_entry and not task.store_value and location_free(task.args)


def store_is_shareable(store: ArtifactStore | None) -> bytes | None:
    """The pickled store when another process can reopen it, else None.

    A store is shareable when it pickles (``Store`` pickles as its URL and options) and does not
    live in this process's memory (``memory://``).
    """
    if store is None:
        return None
    url = str(store.url)
    if url.startswith("memory:"):
        return None
    import cloudpickle

    buf = io.BytesIO()
    try:
        cloudpickle.dump(store, buf)
    except Exception:
        return None
    return buf.getvalue()


def timeout_error(name: str, limit: float, executor: str, what: str) -> TimeoutError:
    """The error a step gets when it runs past its ``timeout`` hint."""
    return TimeoutError(
        f"Step {name!r} ran longer than its timeout of {limit:g} s on the {executor!r} "
        f"executor and was stopped ({what}). Expected it to finish within timeout={limit:g}; "
        f"raise the step's timeout= or make it faster."
    )
