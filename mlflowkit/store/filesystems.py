"""The objects seam's implementations: a local folder (plain ``os`` calls), any fsspec filesystem.

Layer 5: both implement :class:`~mlflowkit.store.objects.ObjectStore` and pass its contract
suite (``mlflowkit.testing.ObjectStoreContract``).

The store never goes through a second filesystem layer of its own: a local folder is worked on
with ``os`` directly (the cache lookup is on the hot path), anything else through the fsspec
filesystem the URL names.

Invariants:

* ``write_atomic`` never leaves a partial file at the target path. Locally: write to
  ``<root>/tmp/<unique>.tmp``, flush, ``fsync`` (when durable), ``os.replace`` onto the target,
  and ``fsync`` the target's directory (when durable). On other filesystems: one ``pipe_file``
  (a single PUT on object stores).
* Temp files are only ever created under ``<root>/tmp/``, named ``TEMP_NAME`` (the writer's
  pid, a counter, random bits, a tag of the host and boot, and the writer's start time), and
  never read; ``sweep_tmp`` deletes only names of that shape: those older than a bound, and at
  once those whose writer is provably dead (see ``temp_owner_dead``).
* Every local write that fails (disk full, read-only, permissions) raises ``StoreError``
  naming the file and the cause, never a bare ``OSError``.
* ``read`` returns ``None`` for a missing file and never a partial one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import itertools
import os
import re
import stat
import threading
import time
from collections.abc import Iterable
from typing import Any

from mlflowkit.errors import StoreError
from mlflowkit.store import owner
from mlflowkit.store._flush import sync_filesystem
from mlflowkit.store.objects import FileStat

__all__ = [
    "TEMP_NAME",
    "FileStat",
    "FsspecFiles",
    "LocalFiles",
    "open_files",
    "temp_owner_dead",
]

_counter = itertools.count()

#: The name of a temp file a store wrote: ``<pid>-<n>-<8 hex>[-<host tag>-<start>].tmp``
#: (the bracketed part is missing from names written by earlier versions).
TEMP_NAME = re.compile(r"(\d{1,10})-\d{1,20}-[0-9a-f]{8}(?:-([0-9a-f]{8})-(\d{1,20}))?\.tmp")

_temp_tail: tuple[int, str] | None = None


def _temp_suffix() -> str:
    """``-<host tag>-<start>.tmp`` of this process (read once per process)."""
    global _temp_tail
    pid = os.getpid()
    if _temp_tail is None or _temp_tail[0] != pid:
        _temp_tail = (pid, f"-{owner.host_tag()}-{owner.process_start(pid) or 0}.tmp")
    return _temp_tail[1]


def temp_owner_dead(name: str) -> bool:
    """Whether the process that wrote temp file ``name`` is provably gone (see ``owner``)."""
    m = TEMP_NAME.fullmatch(name)
    if m is None or m.group(2) != owner.host_tag():
        return False
    pid, start = int(m.group(1)), int(m.group(3))
    return owner.process_gone(pid, start or None)


class LocalFiles:
    """File operations on a local folder with plain ``os`` calls."""

    local = True

    def __init__(self, root: str) -> None:
        self.root = root
        self.tmpdir = os.path.join(root, "tmp")

    # reading ---------------------------------------------------------------------------------
    def read(self, path: str) -> bytes | None:
        """The whole file, or None when it does not exist (nor does a path through a file)."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(fd)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def read_split(self, path: str, head: int) -> tuple[bytes, Any] | None:
        """``(first bytes, opened file)`` for reading an object's header and then its payload.

        Returns the first ``head`` bytes (fewer for a shorter file) and the open file positioned
        after them; the caller closes it. None when the file does not exist.
        """
        try:
            f = open(path, "rb", buffering=0)  # noqa: SIM115 - handed to the caller
        except FileNotFoundError:
            return None
        return f.read(head) or b"", f

    def exists(self, path: str) -> bool:
        """Whether the file exists."""
        return os.path.exists(path)

    def own_dir(self, folder: str) -> bool:
        """Whether ``folder`` is a real folder (not a link to one elsewhere)."""
        try:
            return stat.S_ISDIR(os.lstat(folder).st_mode)
        except (OSError, ValueError):
            return False

    def subfolders(self, folder: str) -> set[str] | None:
        """The names in ``folder`` that are not plain files (folders, links): one ``scandir``.

        A link is listed whatever it points to (a read through it follows it); None when the
        folder cannot be listed (no permission to), so that every path is read.
        """
        try:
            with os.scandir(folder) as it:
                return {e.name for e in it if not e.is_file(follow_symlinks=False)}
        except (FileNotFoundError, NotADirectoryError):
            return set()
        except OSError:
            return None

    def age(self, path: str) -> float | None:
        """Seconds since the file was modified, or None."""
        try:
            return time.time() - os.stat(path).st_mtime
        except FileNotFoundError:
            return None

    def listdir(self, folder: str) -> list[FileStat]:
        """Files directly in ``folder`` (none when it does not exist)."""
        out = []
        try:
            with os.scandir(folder) as it:
                for e in it:
                    if not e.is_file(follow_symlinks=False):
                        continue
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    out.append(
                        FileStat(e.name, st.st_size, f"{st.st_mtime_ns}:{st.st_ino}", st.st_mtime)
                    )
        except FileNotFoundError:
            return []
        return out

    def walk(self, folder: str) -> list[FileStat]:
        """Files one level of subfolders below ``folder`` (the ``ab/<name>`` fan-out)."""
        out = []
        try:
            subs = [e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        for sub in sorted(subs):
            for f in self.listdir(os.path.join(folder, sub)):
                out.append(FileStat(f"{sub}/{f.name}", f.size, f.stamp, f.mtime))
        return out

    # writing ---------------------------------------------------------------------------------
    def write_atomic(
        self, path: str, parts: Iterable[bytes | bytearray | memoryview], durable: bool
    ) -> None:
        """Write ``parts`` to ``path`` so that readers see all of it or nothing.

        Raises
        ------
        StoreError
            The write failed (disk full, read-only store, permissions); nothing was left
            behind at ``path`` or in ``tmp/``.
        """
        try:
            self._write_atomic(path, parts, durable)
        except OSError as exc:
            raise StoreError(
                f"cannot write {path}: {exc.strerror or exc}. Expected a writable store with "
                "free space; free some space (`mlflowkit store gc`), fix the permissions, or "
                "use another store.",
                url=self.root,
            ) from exc

    def _write_atomic(
        self, path: str, parts: Iterable[bytes | bytearray | memoryview], durable: bool
    ) -> None:
        tmp = f"{self.tmpdir}/{os.getpid()}-{next(_counter)}-{os.urandom(4).hex()}"
        tmp += _temp_suffix()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileNotFoundError:
            os.makedirs(self.tmpdir, exist_ok=True)
            fd = os.open(tmp, flags, 0o666)
        try:
            try:
                for part in parts:
                    view = memoryview(part).cast("B")
                    while view:
                        view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.replace(tmp, path)
            except FileNotFoundError:
                parent = os.path.dirname(path)
                os.makedirs(parent, exist_ok=True)
                if durable:
                    _fsync_dir(os.path.dirname(parent))
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise
        if durable:
            _fsync_dir(os.path.dirname(path))

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` with ``data`` (``O_EXCL``); False when it exists."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            return False
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return self.create_exclusive(path, data)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return True

    def remove(self, path: str) -> bool:
        """Delete a file; True when it existed."""
        try:
            os.remove(path)
        except FileNotFoundError:
            return False
        return True

    def move(self, src: str, dst: str) -> bool:
        """Move a file (over ``dst``); False when ``src`` is gone."""
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            if not os.path.exists(src):
                return False
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(src, dst)
        return True

    def restore(self, src: str, dst: str) -> bool:
        """Move ``src`` back to ``dst`` unless ``dst`` exists (``link`` is exclusive)."""
        try:
            os.link(src, dst)
        except FileExistsError:
            return False
        except FileNotFoundError:
            return False
        os.remove(src)
        return True

    def sync(self) -> None:
        """Flush the filesystem holding the store to stable storage (``syncfs``)."""
        sync_filesystem(self.root)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return  # platforms that cannot open a directory (Windows) have no directory fsync
    try:
        os.fsync(fd)
    except OSError as exc:
        # some filesystems do not support fsync on directories; the rename is still atomic
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


_STAMP_KEYS = ("mtime", "LastModified", "last_modified", "ETag", "etag", "md5", "created")


def _info_time(info: dict[str, Any]) -> float | None:
    for k in ("mtime", "LastModified", "last_modified", "created", "modified"):
        v = info.get(k)
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, _dt.datetime):
            return v.timestamp()
    return None


def _info_stamp(info: dict[str, Any]) -> str:
    return "|".join(str(info[k]) for k in _STAMP_KEYS if k in info)


class FsspecFiles:
    """File operations through an fsspec filesystem (memory, object stores, ...)."""

    local = False
    _exclusive = threading.Lock()

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.root = root
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        #: S3 (and compatible servers) create a file exclusively with a conditional write
        #: (``If-None-Match: *``); ``memory://`` lives in this process, where a lock is exact
        self.conditional = any(p in ("s3", "s3a") for p in protocols)

    def read(self, path: str) -> bytes | None:
        """The whole file, or None when it does not exist."""
        try:
            data: bytes = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise self._denied(path, exc) from None
        return data

    def read_split(self, path: str, head: int) -> tuple[bytes, Any] | None:
        """The whole file as ``(bytes, None)``; see :meth:`LocalFiles.read_split`."""
        data = self.read(path)
        return None if data is None else (data, None)

    def exists(self, path: str) -> bool:
        """Whether the file exists.

        On S3 one ``HEAD`` of the key: fsspec's ``exists`` also lists the prefix when the key
        is missing (a folder?), a second request the store never needs (its names are files).
        """
        if self.conditional:
            bucket, key, _ = self.fs.split_path(path)
            try:
                self.fs.call_s3("head_object", Bucket=bucket, Key=key)
            except FileNotFoundError:
                return False
            except PermissionError as exc:
                raise self._denied(path, exc) from None
            return True
        return bool(self.fs.exists(path))

    def own_dir(self, folder: str) -> bool:
        """Whether ``folder`` belongs to the store (fsspec filesystems have no links)."""
        return True

    def subfolders(self, folder: str) -> set[str] | None:
        """The names in ``folder`` that are not files: one listing (on S3, one request for
        the common prefixes). None when it cannot be listed (every path is read then, and
        says why it cannot be)."""
        try:
            try:
                entries = self.fs.ls(folder, detail=True, refresh=True)
            except TypeError:  # filesystems whose ls takes no refresh argument
                entries = self.fs.ls(folder, detail=True)
        except FileNotFoundError:
            return set()
        except OSError:  # no permission to list, a server error
            return None
        out: set[str] = set()
        for e in entries:
            name = e.get("name") if isinstance(e, dict) else None
            if not isinstance(name, str):
                return None
            if e.get("type") != "file":
                out.add(name.rstrip("/").rpartition("/")[2])
        return out

    def _info(self, path: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = self.fs.info(path)
        except FileNotFoundError:
            return None
        return info

    def age(self, path: str) -> float | None:
        """Seconds since the file was modified (0 when the filesystem does not say), or None."""
        info = self._info(path)
        if info is None:
            return None
        t = _info_time(info)
        return 0.0 if t is None else time.time() - t

    def _stats(self, entries: Iterable[dict[str, Any]], base: str) -> list[FileStat]:
        out = []
        prefix = base.rstrip("/") + "/"
        for info in entries:
            if info.get("type") not in ("file", None):
                continue
            name = str(info["name"])
            rel = name[len(prefix) :] if name.startswith(prefix) else name.rsplit("/", 1)[-1]
            t = _info_time(info)
            out.append(
                FileStat(rel, int(info.get("size") or 0), _info_stamp(info), t or time.time())
            )
        return out

    def listdir(self, folder: str) -> list[FileStat]:
        """Files directly in ``folder``."""
        try:
            entries = self.fs.ls(folder, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        except TypeError:  # filesystems whose ls takes no refresh argument
            entries = self.fs.ls(folder, detail=True)
        return self._stats(entries, folder)

    def walk(self, folder: str) -> list[FileStat]:
        """Files below ``folder`` (any depth, relative names)."""
        try:
            found = self.fs.find(folder, detail=True)
        except FileNotFoundError:
            return []
        return sorted(self._stats(found.values(), folder), key=lambda f: f.name)

    def write_atomic(
        self, path: str, parts: Iterable[bytes | bytearray | memoryview], durable: bool
    ) -> None:
        """One ``pipe_file`` of the joined parts (a single PUT on object stores).

        Atomic exactly where the backend's ``pipe_file`` is: object stores (one PUT) and
        ``memory://``. fsspec's own local filesystem writes in place, which is why a local
        folder is always worked on through ``LocalFiles``.
        """
        data = b"".join(bytes(p) if not isinstance(p, bytes) else p for p in parts)
        try:
            self.fs.pipe_file(path, data)
        except PermissionError as exc:
            raise self._denied(path, exc) from None
        except FileNotFoundError:
            if self.conditional:  # S3 has no folders: the bucket itself is missing
                raise self._no_bucket(path) from None
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(path, data)

    def _denied(self, path: str, exc: BaseException) -> StoreError:
        """The server refused these credentials: say which, and where to look."""
        return StoreError(
            f"access to {self.fs.unstrip_protocol(path)} was refused ({exc}). Check the "
            "credentials this process uses (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "~/.aws/credentials or the machine's role) and that they may read and write this "
            "bucket.",
            url=self.fs.unstrip_protocol(self.root),
        )

    def _no_bucket(self, path: str) -> StoreError:
        bucket = path.split("/", 1)[0]
        return StoreError(
            f"the bucket {bucket!r} does not exist, or these credentials cannot see it "
            f"(writing s3://{path}). mlflowkit never creates buckets: create it (e.g. `aws s3 "
            "mb`), or check the bucket name in the store URL and the AWS_* variables "
            "(~/.aws/credentials, AWS_ENDPOINT_URL for an S3-compatible server).",
            url=f"s3://{self.root}",
        )

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` unless it exists; True when this call made it.

        On S3 a conditional write (``If-None-Match: *``): the server refuses the second of two
        racing creates, whichever process or machine they come from. Elsewhere (``memory://``,
        which lives in this process) a lock held across the check and the write.
        """
        if self.conditional:
            try:
                self.fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                return False
            except FileNotFoundError:
                raise self._no_bucket(path) from None
            except PermissionError as exc:
                raise self._denied(path, exc) from None
            return True
        with self._exclusive:
            if self.fs.exists(path):
                return False
            self.write_atomic(path, [data], durable=False)
        return self.read(path) == data

    def remove(self, path: str) -> bool:
        """Delete a file; True when it existed.

        An object store deletes a missing key without complaint, so there the file is looked up
        first (the answer is a report; deleting is idempotent either way).
        """
        if self.conditional and not self.fs.exists(path):
            return False
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            return False
        return True

    def move(self, src: str, dst: str) -> bool:
        """Move a file; False when ``src`` is gone."""
        try:
            self.fs.mv(src, dst)
        except FileNotFoundError:
            return False
        return True

    def restore(self, src: str, dst: str) -> bool:
        """Move ``src`` back to ``dst`` unless ``dst`` exists; True when moved.

        On S3 the copy back is a conditional create (see :meth:`create_exclusive`), then
        ``src`` is deleted; elsewhere a lock is held across the check and the move.
        """
        if self.conditional:
            data = self.read(src)
            if data is None or not self.create_exclusive(dst, data):
                return False
            self.remove(src)
            return True
        with self._exclusive:
            if self.fs.exists(dst):
                return False
            return self.move(src, dst)

    def sync(self) -> None:
        """Nothing to do: each ``pipe_file`` is as durable as the filesystem makes it."""


def open_files(
    url: str, storage_options: dict[str, Any]
) -> tuple[LocalFiles | FsspecFiles, str, str]:
    """The objects seam of the store at ``url``: ``(files, canonical url, protocol)``.

    A plain folder (or any URL fsspec resolves to its local filesystem) is worked on with
    ``LocalFiles``, its url made absolute; anything else through the fsspec filesystem the URL
    names. fsspec is not imported for a plain folder.

    Raises
    ------
    StoreError
        The url is empty or holds NUL characters, names a file, or names a filesystem fsspec
        cannot open here.
    """
    if not isinstance(url, str) or not url or "\x00" in url:
        raise StoreError(
            f"invalid store url {url!r}: expected a folder path or an fsspec URL (e.g. "
            "'./.mlflowkit' or 'memory://name'), not empty and without NUL characters; "
            "pass '.' for the current folder.",
            url=str(url),
        )
    fs: Any = None
    if "://" in url or "::" in url or storage_options:
        from fsspec.core import url_to_fs
        from fsspec.implementations.local import LocalFileSystem

        try:
            fs, path = url_to_fs(url, **storage_options)
        except (ValueError, ImportError) as exc:
            raise StoreError(
                f"cannot open store {url!r}: {exc}. Expected a folder or an fsspec URL "
                "such as 'memory://name' or 's3://bucket/prefix' (with its fsspec backend "
                "installed).",
                url=url,
            ) from exc
        if isinstance(fs, LocalFileSystem):
            fs = None
    else:
        path = url  # a plain folder: no need to import fsspec at all
    if fs is None:
        root = os.path.abspath(path)
        if os.path.exists(root) and not os.path.isdir(root):
            raise StoreError(
                f"cannot create a store at {root}: it is a file. Expected a folder (or a "
                "path where one can be created); pass another url or set $MLFLOWKIT_STORE.",
                url=root,
            )
        return LocalFiles(root), root, "file"
    root = path.rstrip("/")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return FsspecFiles(fs, root), fs.unstrip_protocol(root), protocol
