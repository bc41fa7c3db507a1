"""Which index a store uses: its own SQLite file (default), or a PostgreSQL database.

Layer 5. ``mk.Store(url, index=None)`` indexes in SQLite (beside a local store's files; for a
remote store in a local cache folder: a cache of the files, per machine). ``index=
"postgresql://…"`` indexes in a database every machine shares: version numbers, stages and the
audit are then one for the whole team, and single-flight locks are the database's.

Single-flight locks are chosen here too, in one place (``index_opener``): the database's with a
PostgreSQL index; with the SQLite index, kernel record locks on one file for a local store
(``mlflowkit.store.flight``), and lock files with a lease (``mlflowkit.store.locks``) for a
remote store or where the platform has no ``fcntl`` (Windows).

Invariant: an ``index=`` that is neither is refused at construction with a ``StoreError`` that
never echoes credentials; psycopg is imported only for a PostgreSQL index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlflowkit.errors import StoreError
from mlflowkit.store.flight import RECORD_LOCKS, LocalLocks
from mlflowkit.store.sqlite_index import open_for_store

if TYPE_CHECKING:
    from mlflowkit.store.index import Index

__all__ = ["index_opener", "shared_index_url"]


def shared_index_url(index: str | None, store_url: str) -> str | None:
    """``index=`` checked: a PostgreSQL URL, or None (the store's own SQLite index)."""
    if index is None or index in ("", "sqlite"):
        return None
    if not isinstance(index, str) or not index.startswith(("postgresql://", "postgres://")):
        shown = index if isinstance(index, str) else type(index).__qualname__
        if isinstance(index, str) and "@" in index:
            shown = index.split("://", 1)[0] + "://…"  # never echo credentials
        raise StoreError(
            f"index= for the store {store_url} must be a PostgreSQL URL "
            f"('postgresql://user@host:port/database') or None for the store's own SQLite "
            f"index; got {shown!r}.",
            url=store_url,
        )
    return index


def index_opener(
    index_url: str | None, store_url: str, local_root: str | None, protocol: str
) -> tuple[Callable[[], Index], Any]:
    """``(open the index, the single-flight locks or None)`` for a store.

    The opener is called on first use and again after the index was replaced. The locks: a
    ``PostgresIndex`` kept for its lock connections with a PostgreSQL index; ``LocalLocks``
    (record locks on ``locks/flight``) for a local store (``local_root``) with the SQLite
    index; None, and the store locks with files, for any other store or where the platform has
    no record locks (Windows).
    """
    if index_url is None:
        locks = LocalLocks(local_root, store_url) if local_root and RECORD_LOCKS else None
        return (lambda: open_for_store(store_url, local_root, protocol)), locks
    from mlflowkit.store.postgres_index import PostgresIndex

    return (lambda: PostgresIndex(index_url, store_url)), PostgresIndex(index_url, store_url)
