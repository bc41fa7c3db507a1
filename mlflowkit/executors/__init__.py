"""The executor registry: built-ins by lazy dotted path, plugins by entry point.

Invariants
----------
* Nothing is imported or scanned at ``import mlflowkit``: a built-in's module is imported when
  it is first asked for; entry points (group ``mlflowkit.executors``) are read only on a miss
  or by ``available()``.
* A loaded plugin is type-checked: it must be an ``Executor`` subclass (or a factory returning
  an ``Executor``), else ``ExecutorError`` names the plugin and what was found.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from typing import Any

from mlflowkit.errors import ExecutorError
from mlflowkit.executors.base import Capabilities, Executor, Task, TaskHandle, TaskResult

__all__ = [
    "Capabilities",
    "Executor",
    "Task",
    "TaskHandle",
    "TaskResult",
    "available",
    "get",
    "register",
]

ENTRY_POINT_GROUP = "mlflowkit.executors"

#: name -> (dotted path "module:attr", modules that must be importable, pip extra)
_BUILTINS: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    "local": ("mlflowkit.executors.local:LocalExecutor", (), None),
    "threads": ("mlflowkit.executors.threads:ThreadExecutor", (), None),
    "processes": ("mlflowkit.executors.processes:ProcessExecutor", (), None),
    "dask": ("mlflowkit.executors.dask:DaskExecutor", ("dask", "distributed"), "dask"),
    "gpu": ("mlflowkit.executors.gpu:GpuExecutor", ("cupy",), "gpu"),
}

_REGISTERED: dict[str, Any] = {}


def register(name: str, target: Any) -> None:
    """Register an executor class (or a ``"module:attr"`` path) under ``name`` in this process."""
    if not isinstance(name, str) or not name:
        raise ExecutorError(f"executor name must be a non-empty string, found {name!r}")
    _REGISTERED[name] = target


def _importable(modules: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _load_path(path: str, name: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _BUILTINS.get(name, ("", (), None))[2]
        hint = f" Install it with: pip install 'mlflowkit[{extra}]'." if extra else ""
        raise ExecutorError(
            f"Executor {name!r} could not be loaded: {exc}.{hint}", executor=name
        ) from exc
    return getattr(module, attr) if attr else module


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points  # read on a miss only, never at import

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Names of the executors that can be used here (their requirements are installed)."""
    names = [n for n, (_, mods, _) in _BUILTINS.items() if _importable(mods)]
    if "gpu" in names:
        from mlflowkit.gpu import available as gpu_available

        if not gpu_available():
            names.remove("gpu")
    names += [n for n in _REGISTERED if n not in names]
    names += [n for n in _entry_points() if n not in names]
    return names


def _resolve(name: str) -> Any:
    if name in _REGISTERED:
        target = _REGISTERED[name]
        return _load_path(target, name) if isinstance(target, str) else target
    if name in _BUILTINS:
        path, modules, extra = _BUILTINS[name]
        if not _importable(modules):
            missing = [m for m in modules if importlib.util.find_spec(m) is None]
            raise ExecutorError(
                f"Executor {name!r} needs {' and '.join(missing)}, which "
                f"{'are' if len(missing) > 1 else 'is'} not installed here. "
                f"Install it with: pip install 'mlflowkit[{extra}]'.",
                executor=name,
            )
        return _load_path(path, name)
    eps = _entry_points()
    if name in eps:
        try:
            return eps[name].load()
        except Exception as exc:
            raise ExecutorError(
                f"Executor plugin {name!r} ({eps[name].value}) failed to load: {exc}. "
                f"Reinstall the package that provides it.",
                executor=name,
            ) from exc
    known = sorted(set(_BUILTINS) | set(_REGISTERED) | set(eps))
    close = [k for k in known if k.lower() == name.lower()] or difflib.get_close_matches(
        name.lower(), known, n=1
    )
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ExecutorError(
        f"Unknown executor {name!r}:{hint} Expected one of {known}. Third-party executors register "
        f"under the entry-point group {ENTRY_POINT_GROUP!r}; check the name and that the "
        f"plugin's package is installed.",
        executor=name,
    )


def get(name: str, **options: Any) -> Executor:
    """Build the executor registered as ``name`` with ``options``.

    Raises
    ------
    ExecutorError
        Unknown name (the message lists the known ones), missing extra (with the pip command),
        or a plugin that is not an ``Executor``.
    """
    if isinstance(name, Executor):
        return name
    if not isinstance(name, str):
        raise ExecutorError(
            f"executor must be a name or an mk.Executor instance, found {type(name).__name__}"
        )
    target = _resolve(name)
    try:
        instance = target(**options)
    except TypeError as exc:
        raise ExecutorError(
            f"Executor {name!r} does not accept the options {sorted(options)}: {exc}.",
            executor=name,
        ) from exc
    if not isinstance(instance, Executor):
        raise ExecutorError(
            f"Executor plugin {name!r} produced {type(instance).__name__}, expected an "
            f"mk.Executor subclass instance. The plugin's entry point must name an Executor "
            f"subclass or a factory returning one.",
            executor=name,
        )
    return instance
