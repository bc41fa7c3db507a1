"""Checks the built-in executors make on what they are asked to do.

Layer 5, beside the executors that use it (``local``, ``threads``, ``processes``).

Invariants
----------
* A ``max_workers`` is an ``int >= 1`` or ``None``; anything else is refused when the executor
  is built (a pool of no workers would wait forever; 0 meaning "the default" hides a mistake).
* A step that asks for a GPU never silently runs on the CPU: an executor without GPUs refuses
  it with an ``ExecutorError`` that says where it can run.
"""

from __future__ import annotations

from typing import Any

from mlflowkit.errors import ExecutorError
from mlflowkit.executors.base import Task

__all__ = ["check_max_workers", "refuse_gpu"]


def check_max_workers(max_workers: Any, executor: str, default: str) -> None:
    """Refuse a ``max_workers`` that is not an int >= 1 or None.

    Raises
    ------
    ExecutorError
        Naming ``executor``, the value found and ``default`` (what None means).
    """
    if max_workers is None or (
        isinstance(max_workers, int) and not isinstance(max_workers, bool) and max_workers >= 1
    ):
        return
    raise ExecutorError(
        f"max_workers for the {executor!r} executor: expected an int >= 1 or None, found "
        f"{max_workers!r}. Pass a positive number of workers, or None for the default "
        f"({default}).",
        executor=executor,
    )


def refuse_gpu(task: Task, executor: str) -> None:
    """Raise ``ExecutorError`` if ``task``'s step asks for a GPU (``executor`` has none)."""
    if task.step.hints.gpus > 0:
        raise ExecutorError(
            f"Step {task.name!r} asks for resources={dict(task.step.hints.resources)}, but the "
            f"{executor!r} executor has no GPU. Run it with executor='gpu' (pip install "
            f"'mlflowkit[gpu]' on a machine with a CUDA GPU) or a Dask cluster whose workers "
            f"have a GPU resource; or drop the resources hint.",
            executor=executor,
            step=task.name,
        )
