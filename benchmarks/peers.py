"""Setting the peers up the same way everywhere: offline, quiet, in the session folder.

* Prefect runs against a temporary local API server that it starts itself (no
  ``PREFECT_API_URL``), with its home, database and result storage in a folder of the session.
* redun logs warnings only.
* Hamilton needs one module-level function per node, so its chains are generated as real
  source files (its caching hashes function source).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tempfile
from types import ModuleType

__all__ = [
    "PREFECT_ENV",
    "fresh_dir",
    "hamilton_chain_module",
    "prefect_environment",
    "quiet_redun",
]

#: Prefect settings for a quiet, offline, temporary server
PREFECT_ENV = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
}


def fresh_dir(root: str, prefix: str) -> str:
    """A new empty folder under ``root``."""
    os.makedirs(root, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=root)


def prefect_environment(home: str) -> dict[str, str]:
    """Set (and return) the environment for Prefect with its home in ``home``.

    Call it before importing Prefect. ``PREFECT_API_URL`` is removed, so Prefect starts a
    temporary local server on first use.
    """
    os.makedirs(home, exist_ok=True)
    os.environ.pop("PREFECT_API_URL", None)
    env = {"PREFECT_HOME": home, **PREFECT_ENV}
    os.environ.update(env)
    return env


def quiet_redun() -> None:
    """redun logs every job at INFO; keep warnings only."""
    logging.getLogger("redun").setLevel(logging.WARNING)


def hamilton_chain_source(n: int, body: str = "return {prev} + 1") -> str:
    """Source of a module with ``s0(start)``, ``s1(s0)``, … ``s{n-1}``: a chain of ``n`` nodes."""
    lines = ['"""A generated chain for Hamilton."""', ""]
    lines += ["", "def s0(start: int) -> int:", "    return start + 1", ""]
    for i in range(1, n):
        prev = f"s{i - 1}"
        lines += ["", f"def s{i}({prev}: int) -> int:", "    " + body.format(prev=prev), ""]
    return "\n".join(lines)


def hamilton_chain_module(folder: str, n: int) -> ModuleType:
    """Write (once) and import the generated Hamilton chain of ``n`` nodes from ``folder``."""
    name = f"hamilton_chain_{n}"
    path = os.path.join(folder, name + ".py")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(hamilton_chain_source(n))
        os.replace(tmp, path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)
