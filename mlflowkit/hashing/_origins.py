"""Where code comes from: user code, the standard library, or an installed distribution.

The code digest follows user code; standard-library code counts by its name, third-party code
by its distribution's name and version. A module is third-party when its file
lies in a ``site-packages``/``dist-packages`` folder, standard library when it is one of
``sys.stdlib_module_names`` or lies in the standard library's folders, and user code otherwise.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Mapping

__all__ = [
    "STDLIB",
    "THIRD_PARTY",
    "USER",
    "distribution",
    "import_kind",
    "module_kind",
]

USER, STDLIB, THIRD_PARTY = "user", "stdlib", "third-party"
_SITE_MARKERS = ("site-packages", "dist-packages")


@functools.lru_cache(maxsize=1)
def _distributions() -> Mapping[str, list[str]]:
    import importlib.metadata

    return importlib.metadata.packages_distributions()


@functools.cache
def distribution(top: str) -> tuple[str, str]:
    """``(distribution, version)`` providing the top-level import name ``top``.

    A distribution named like the import name is taken first (cheap); the full
    ``packages_distributions()`` map is built, once, only for the other names.
    """
    import importlib.metadata

    try:
        return top, importlib.metadata.version(top)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        pass
    for dist in sorted(_distributions().get(top, ())):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    version = getattr(sys.modules.get(top), "__version__", None)
    return top, version if isinstance(version, str) else "unknown"


@functools.lru_cache(maxsize=1)
def _stdlib_dirs() -> tuple[str, ...]:
    """Folders of the standard library (without ``sysconfig``, which costs ~1.5 ms to load)."""
    if os.name != "posix":
        import sysconfig

        paths = sysconfig.get_paths()
        return tuple({paths["stdlib"], paths["platstdlib"]})
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"  # as sysconfig's posix scheme
    stdlib = os.path.join(sys.base_prefix, sys.platlibdir, version)
    platstdlib = os.path.join(sys.exec_prefix, sys.platlibdir, version)
    return tuple({stdlib, platstdlib, os.path.dirname(os.__file__)})


def _in_site(path: str) -> bool:
    return any(marker in path for marker in _SITE_MARKERS)


@functools.lru_cache(maxsize=4096)
def module_kind(name: str) -> str:
    """Whether the module ``name`` is user code, standard library or third-party code."""
    top = name.partition(".")[0]
    if top == "__main__":
        return USER
    if top in sys.stdlib_module_names or top == "builtins":
        return STDLIB
    if top == "mlflowkit":
        return THIRD_PARTY
    module = sys.modules.get(name) or sys.modules.get(top)
    path = getattr(module, "__file__", None)
    if path is None:
        locations = list(getattr(module, "__path__", None) or [])
        path = locations[0] if locations else None
    if path is None:
        return import_kind(top) if module is None else USER
    path = str(path)
    if _in_site(path):
        return THIRD_PARTY
    if path.startswith(_stdlib_dirs()):
        return STDLIB
    return USER


@functools.lru_cache(maxsize=4096)
def import_kind(top: str) -> str:
    """Like ``module_kind`` for a top-level module that may not be imported yet."""
    if top in sys.stdlib_module_names or top == "builtins":
        return STDLIB
    if top == "mlflowkit":
        return THIRD_PARTY
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return USER
    if spec is None:
        return USER
    locations = [spec.origin or "", *(spec.submodule_search_locations or [])]
    if any(_in_site(str(p)) for p in locations):
        return THIRD_PARTY
    if any(str(p).startswith(_stdlib_dirs()) for p in locations if p):
        return STDLIB
    return USER
