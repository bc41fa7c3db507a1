from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A fresh local store in a temporary folder."""
    import mlflowkit as mk

    return mk.Store(str(tmp_path / "store"))


@pytest.fixture(autouse=True)
def _isolated_cache_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep per-user caches (file stat cache, remote-store indexes) out of the home folder."""
    monkeypatch.setenv("MLFLOWKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "user-cache"))
    monkeypatch.delenv("MLFLOWKIT_STORE", raising=False)
    os.environ.setdefault("PYTHONHASHSEED", "0")
