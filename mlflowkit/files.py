"""``mk.File`` and ``mk.Dir``: step inputs hashed by their content, not by their path.

Invariants
----------
* ``File`` and ``Dir`` are frozen. Their content digest is what ``hash_value`` sees (through
  ``__mlflowkit_hash__``): a file counts by the BLAKE3 of its bytes, a directory by the sorted
  relative paths of the files below it and each one's content digest. The path, the URL and
  the storage options (credentials) are not part of the digest: editing the file re-runs the
  steps that read it; moving it does not.
* A file is re-read only when it may have changed. A stat cache, keyed by protocol and path,
  keeps ``(size, mtime_ns, ctime_ns, inode, device)`` for local files (the ETag or checksum,
  else modification time, and size from ``fs.info`` for remote ones) with the digest; it lives
  in memory and in ``<cache dir>/filestat.sqlite``, where the cache dir is
  ``$MLFLOWKIT_CACHE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/mlflowkit``.
* A digest is remembered only when the file's modification time is more than
  ``MTIME_SLACK_S`` seconds older than the moment it was read, and the file's stat did not
  change while it was read: a change within the filesystem's timestamp granularity can then
  never hide behind an unchanged stat. Remote files with neither a checksum nor a
  modification time (``memory://``) are always read.
* Missing files and directories raise ``HashingError`` saying what was expected.
"""

from __future__ import annotations

import os
import sqlite3
import stat as _stat
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import closing
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, NamedTuple

import blake3

from mlflowkit.errors import HashingError

__all__ = ["MTIME_SLACK_S", "Dir", "File", "StatCacheInfo", "stat_cache_info"]

#: A file modified less than this many seconds before it is read is not remembered.
MTIME_SLACK_S = 2.0
_BIG = 1 << 20
_CHUNK = 8 << 20
_CHECKSUM_KEYS = ("ETag", "etag", "md5Hash", "crc32c", "checksum", "sha256")
_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "mtime_ns")


# --------------------------------------------------------------------------------------------
# the stat cache


class StatCacheInfo(NamedTuple):
    """Counters of this process's stat cache: digests served from it, and files read."""

    hits: int
    reads: int


class _StatCache:
    """Signatures and digests in memory, backed by a small SQLite file shared by processes."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.reads = 0

    @staticmethod
    def _db_path() -> Path:
        base = os.environ.get("MLFLOWKIT_CACHE_DIR")
        if not base:
            xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(
                os.path.expanduser("~"), ".cache"
            )
            base = os.path.join(xdg, "mlflowkit")
        return Path(base) / "filestat.sqlite"

    def _connect(self) -> sqlite3.Connection:
        path = self._db_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=10.0)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS filestat "
            "(key TEXT PRIMARY KEY, signature TEXT NOT NULL, digest TEXT NOT NULL)"
        )
        return conn

    def get(self, key: str, signature: str) -> str | None:
        memo = self._memo.get(key)
        if memo is None:
            try:
                with closing(self._connect()) as conn:
                    row = conn.execute(
                        "SELECT signature, digest FROM filestat WHERE key = ?", (key,)
                    ).fetchone()
            except (sqlite3.Error, OSError):  # an unusable cache only costs a re-read
                row = None
            if row is not None:
                memo = (str(row[0]), str(row[1]))
                self._memo[key] = memo
        if memo is not None and memo[0] == signature:
            with self._lock:
                self.hits += 1
            return memo[1]
        return None

    def put(self, key: str, signature: str, digest: str) -> None:
        self._memo[key] = (signature, digest)
        try:
            with closing(self._connect()) as conn, conn:
                conn.execute(
                    "INSERT OR REPLACE INTO filestat (key, signature, digest) VALUES (?, ?, ?)",
                    (key, signature, digest),
                )
        except (sqlite3.Error, OSError):  # an unusable cache only costs a re-read
            pass

    def count_read(self) -> None:
        with self._lock:
            self.reads += 1


_CACHE = _StatCache()


def stat_cache_info() -> StatCacheInfo:
    """How many file digests this process took from the stat cache, and how many files it read."""
    return StatCacheInfo(_CACHE.hits, _CACHE.reads)


# --------------------------------------------------------------------------------------------
# local files


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> str:
    return os.path.abspath(url[len("file://") :] if url.startswith("file://") else url)


def _local_signature(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"


def _local_digest(path: str, what: str) -> str:
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise HashingError(
            f"{what}: no such file {path!r}; expected an existing file. Create it, or fix the path."
        ) from None
    except OSError as exc:
        raise HashingError(f"{what}: cannot stat {path!r}: {exc}") from exc
    if not _stat.S_ISREG(before.st_mode):
        kind = "a directory (use mk.Dir)" if _stat.S_ISDIR(before.st_mode) else "not a file"
        raise HashingError(f"{what}: {path!r} is {kind}; expected a regular file")
    key = f"file\x00{path}"
    signature = _local_signature(before)
    cached = _CACHE.get(key, signature)
    if cached is not None:
        return cached
    started = time.time()
    _CACHE.count_read()
    h = blake3.blake3(max_threads=blake3.blake3.AUTO) if before.st_size > _BIG else blake3.blake3()
    try:
        if before.st_size:
            h.update_mmap(path)
        after = os.stat(path)
    except OSError as exc:
        raise HashingError(f"{what}: cannot read {path!r}: {exc}") from exc
    digest: str = h.hexdigest()
    stable = _local_signature(after) == signature
    if stable and before.st_mtime_ns / 1e9 < started - MTIME_SLACK_S:
        _CACHE.put(key, signature, digest)
    return digest


def _local_files(root: str, what: str) -> Iterator[tuple[str, str]]:
    if not os.path.isdir(root):
        found = "missing" if not os.path.exists(root) else "not a directory"
        raise HashingError(
            f"{what}: {root!r} is {found}; expected an existing directory. Create it, or fix "
            "the path (use mk.File for a single file)."
        )
    for current, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(current, name)
            yield Path(os.path.relpath(full, root)).as_posix(), full


# --------------------------------------------------------------------------------------------
# fsspec files


def _remote_signature(info: Mapping[str, Any]) -> tuple[str | None, bool]:
    """``(signature, needs_mtime_slack)``; ``None`` when nothing identifies a version."""
    size = info.get("size")
    for key in _CHECKSUM_KEYS:
        if info.get(key):
            return f"{key}={info[key]}:{size}", False
    for key in _MTIME_KEYS:
        if info.get(key):
            return f"{key}={info[key]}:{size}", True
    return None, False


def _mtime_seconds(info: Mapping[str, Any]) -> float | None:
    for key in _MTIME_KEYS:
        value = info.get(key)
        if isinstance(value, (int, float)):
            return float(value) / (1e9 if key == "mtime_ns" else 1.0)
        stamp = getattr(value, "timestamp", None)
        if callable(stamp):
            return float(stamp())
    return None


def _remote_digest(fs: Any, path: str, info: Mapping[str, Any], what: str) -> str:
    signature, needs_slack = _remote_signature(info)
    key = f"{_protocol(fs)}\x00{path}"
    if signature is not None:
        cached = _CACHE.get(key, signature)
        if cached is not None:
            return cached
    started = time.time()
    _CACHE.count_read()
    size = info.get("size") or 0
    h = blake3.blake3(max_threads=blake3.blake3.AUTO) if size > _BIG else blake3.blake3()
    try:
        with fs.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except FileNotFoundError:
        raise HashingError(f"{what}: no such file {path!r}; expected an existing file") from None
    digest: str = h.hexdigest()
    if signature is not None:
        mtime = _mtime_seconds(info)
        if not needs_slack or (mtime is not None and mtime < started - MTIME_SLACK_S):
            _CACHE.put(key, signature, digest)
    return digest


def _protocol(fs: Any) -> str:
    protocol = fs.protocol
    return str(protocol[0] if isinstance(protocol, (tuple, list)) else protocol)


# --------------------------------------------------------------------------------------------
# File and Dir


def _rebuild(cls: type[_PathInput], path: str, options: dict[str, Any]) -> _PathInput:
    return cls(path, **options)


class _PathInput:
    __slots__ = ("_options", "_path")
    _path: str
    _options: Mapping[str, Any]

    def __init__(self, path_or_url: str | os.PathLike[str], **storage_options: Any) -> None:
        path = os.fspath(path_or_url)
        if not isinstance(path, str) or not path:
            raise HashingError(
                f"{type(self).__name__} expects a non-empty path or URL string, found "
                f"{path_or_url!r}"
            )
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_options", MappingProxyType(dict(storage_options)))

    @property
    def path(self) -> str:
        """The path or URL, as given."""
        return self._path

    @property
    def storage_options(self) -> Mapping[str, Any]:
        """Options for the fsspec filesystem (never part of the digest)."""
        return self._options

    @property
    def is_local(self) -> bool:
        """Whether the path is on the local filesystem (a plain path or ``file://``)."""
        return _is_local(self._path)

    def _fs(self) -> tuple[Any, str]:
        import fsspec

        fs, path = fsspec.core.url_to_fs(self._path, **self._options)
        return fs, path

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen; make a new one instead")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _PathInput) or type(other) is not type(self):
            return NotImplemented
        return self._path == other._path and dict(self._options) == dict(other._options)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._path))

    def __repr__(self) -> str:
        extra = "".join(f", {k}=..." for k in sorted(self._options))
        return f"{type(self).__name__}({self._path!r}{extra})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._path, dict(self._options)))


class File(_PathInput):
    """A file input, hashed by its content.

    Parameters
    ----------
    path_or_url:
        A local path, or an fsspec URL (``s3://bucket/key``, ``memory://x.csv``, ...).
    **storage_options:
        Passed to the fsspec filesystem (credentials, endpoints); not hashed.

    Examples
    --------
    >>> @mk.step
    ... def count_lines(f: mk.File) -> int:
    ...     with f.open() as fh:
    ...         return sum(1 for _ in fh)
    """

    __slots__ = ()

    def open(self, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        """Open the file through fsspec (local files through the local filesystem)."""
        if self.is_local and not self._options:
            return open(_local_path(self._path), mode, **kwargs)
        fs, path = self._fs()
        handle: IO[Any] = fs.open(path, mode, **kwargs)
        return handle

    def digest(self) -> str:
        """BLAKE3-256 hex digest of the file's bytes (from the stat cache when unchanged).

        Raises
        ------
        HashingError
            When the file does not exist or is not a regular file.
        """
        what = repr(self)
        if self.is_local:
            return _local_digest(_local_path(self._path), what)
        fs, path = self._fs()
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise HashingError(
                f"{what}: no such file {path!r}; expected an existing file"
            ) from None
        if info.get("type") == "directory":
            raise HashingError(f"{what}: {path!r} is a directory (use mk.Dir)")
        return _remote_digest(fs, path, info, what)

    def __mlflowkit_hash__(self) -> tuple[str, str]:
        return ("file", self.digest())


class Dir(_PathInput):
    """A directory input, hashed by the relative paths and contents of the files below it.

    Parameters
    ----------
    path_or_url:
        A local path, or an fsspec URL.
    **storage_options:
        Passed to the fsspec filesystem; not hashed.
    """

    __slots__ = ()

    def files(self) -> list[str]:
        """The relative paths (``/``-separated, sorted) of the files below the directory."""
        return [rel for rel, _ in self._entries()]

    def open(self, name: str, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        """Open the file ``name`` (a relative path) inside the directory."""
        return File(self._join(name), **self._options).open(mode, **kwargs)

    def _join(self, name: str) -> str:
        return self._path.rstrip("/") + "/" + name.lstrip("/")

    def _entries(self) -> list[tuple[str, Any]]:
        what = repr(self)
        if self.is_local:
            return sorted(_local_files(_local_path(self._path), what))
        fs, root = self._fs()
        if not fs.isdir(root):
            raise HashingError(
                f"{what}: {root!r} is missing or not a directory; expected an existing directory"
            )
        found = fs.find(root, detail=True, withdirs=False)
        prefix = root.rstrip("/") + "/"
        entries = [
            (name[len(prefix) :] if name.startswith(prefix) else name, (name, info))
            for name, info in found.items()
        ]
        return sorted(entries, key=lambda e: e[0])

    def digests(self) -> dict[str, str]:
        """``{relative path: content digest}`` of every file below the directory."""
        what = repr(self)
        if self.is_local:
            return {rel: _local_digest(full, what) for rel, full in self._entries()}
        fs, _ = self._fs()
        return {rel: _remote_digest(fs, name, info, what) for rel, (name, info) in self._entries()}

    def __mlflowkit_hash__(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return ("dir", tuple(sorted(self.digests().items())))
