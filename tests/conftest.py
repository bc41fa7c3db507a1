from __future__ import annotations

import os
import sys
from collections.abc import Iterator
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


@pytest.fixture(scope="session", autouse=True)
def _isolated_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The whole session, from its first fixture on, uses temporary stores and caches.

    Session- and module-scoped fixtures (a Dask cluster, a forkserver) start processes before
    any per-test fixture runs, and those processes keep the environment they started with: the
    user's store (``./.mlflowkit``) and cache folder (``~/.cache/mlflowkit``) must not be in it.
    An autouse session fixture is set up before every other fixture of the session.
    """
    base = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOWKIT_CACHE_DIR", str(base / "user-cache"))
        patch.setenv("MLFLOWKIT_STORE", str(base / "session-default-store"))
        yield


@pytest.fixture(autouse=True)
def _isolated_cache_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep per-user caches (file stat cache, remote-store indexes) out of the home folder, and
    give each test its own default store: a pipeline run without ``store=`` (``p()``) writes
    there, never into ``./.mlflowkit`` of the folder pytest was started from."""
    monkeypatch.setenv("MLFLOWKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "user-cache"))
    default = tmp_path_factory.mktemp("default-store") / "store"
    monkeypatch.setenv("MLFLOWKIT_STORE", str(default))
    os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(scope="session", autouse=True)
def _isolated_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Signing keys live in a temporary keys folder for the whole session (never the user's
    ``~/.config/mlflowkit/keys``); every process of the session signs with its ``default``."""
    base = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOWKIT_KEYS_DIR", str(base / "keys"))
        patch.delenv("MLFLOWKIT_KEY", raising=False)
        yield


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A real PostgreSQL server on 127.0.0.1 for the session (see ``tests/servers.py``)."""
    from tests.servers import start_postgres

    with start_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[object]:
    """A real S3-protocol server (moto's server mode) on 127.0.0.1 for the session."""
    from tests.servers import start_s3

    with start_s3() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server, monkeypatch: pytest.MonkeyPatch) -> str:  # type: ignore[no-untyped-def]
    """A new, empty bucket on the session's S3 server; the standard ``AWS_*`` variables point
    this test's process (and the processes it starts) at that server. Returns the bucket name."""
    import uuid

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"mk-{uuid.uuid4().hex[:20]}"
    s3_server.filesystem().mkdir(bucket)
    return bucket
