"""The objects seam: the bytes of a store's files on some filesystem, by path.

Layer 3: a contract only. Implementations: ``LocalFiles`` (a local folder, plain ``os`` calls)
and ``FsspecFiles`` (any fsspec filesystem) in :mod:`mlflowkit.store.filesystems`, and the
test double ``mlflowkit.testing.InMemoryObjects``. Every implementation runs the contract
suite ``mlflowkit.testing.ObjectStoreContract``.

Every path handed to an ``ObjectStore`` is ``f"{objects.root}/<name>"``: the store builds its
names (``objects/ab/<digest>``, ``cache/ab/<key>.json``, ``runs/<id>.json``, ...) under the
root, and the implementation maps them to its filesystem. The store knows nothing else about
the filesystem: no ``os`` call, no fsspec call outside an implementation.

Invariants every implementation keeps (the contract suite checks each):

* ``write_atomic`` never leaves a partial file at the target path: a reader sees the old bytes,
  or nothing, or all the new bytes. A failed write raises ``StoreError`` (never a bare
  ``OSError``) and leaves nothing behind.
* ``read`` returns ``None`` for a missing file, never a partial one.
* ``create_exclusive`` creates a file only if none is there, and says whether this call made
  it: with an exclusive primitive where the backend has one (``O_EXCL`` locally; conditional
  writes on S3; a lock in this process for ``memory://``). A filesystem with no exclusive
  primitive gets the check-then-write of one process: use a PostgreSQL index for its locks.
* ``remove`` / ``move`` / ``restore`` report whether there was something to act on; none
  raises for a missing source.
* ``listdir`` and ``walk`` list files only (never folders, never through a link to a folder
  elsewhere), with names relative to the listed folder; a missing folder lists as empty.
* ``subfolders`` may list more than the folders (a link, any name that is not a plain file),
  never fewer: a path through a name it leaves out is missing. None: it cannot tell.
* ``sync`` returns once every write made so far is on stable storage (a no-op where the
  backend makes each write durable by itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = ["FileStat", "ObjectStore"]


class FileStat(NamedTuple):
    """A listed file: path relative to the listed folder, size, change stamp, mtime."""

    name: str
    size: int
    stamp: str
    mtime: float


@runtime_checkable
class ObjectStore(Protocol):
    """Files of one store on one filesystem (see the module docstring)."""

    #: The folder every path lives under (a local absolute path, or the fsspec path).
    root: str
    #: True when paths are local OS paths: the store may then use local-only shortcuts
    #: (lay out folders with one ``stat``, fsync, sweep temp files of dead writers).
    local: bool

    # reading ---------------------------------------------------------------------------------
    def read(self, path: str) -> bytes | None:
        """The whole file, or None when it does not exist."""
        ...

    def read_split(self, path: str, head: int) -> tuple[bytes, Any] | None:
        """``(first bytes, open file or None)``: read an object's header, then its payload.

        The first ``head`` bytes (fewer for a short file) and, when the rest has not been read
        yet, the open binary file positioned after them (the caller closes it; ``None`` when
        the first bytes are the whole file). None when the file does not exist.
        """
        ...

    def exists(self, path: str) -> bool:
        """Whether the file exists."""
        ...

    def age(self, path: str) -> float | None:
        """Seconds since the file was last written (0 when unknown), or None when missing."""
        ...

    def listdir(self, folder: str) -> list[FileStat]:
        """Files directly in ``folder`` (empty when it does not exist)."""
        ...

    def walk(self, folder: str) -> list[FileStat]:
        """Files in the subfolders of ``folder`` (the ``ab/<name>`` fan-out), sorted by name."""
        ...

    def own_dir(self, folder: str) -> bool:
        """Whether ``folder`` is the store's own (not a link to a folder elsewhere)."""
        ...

    def subfolders(self, folder: str) -> set[str] | None:
        """The names in ``folder`` a file may be below, in one listing (empty when it does not
        exist); None when the filesystem cannot tell (then any may be). Lets a reader of many
        ``ab/<name>`` paths skip those whose ``ab`` is not there.
        """
        ...

    # writing ---------------------------------------------------------------------------------
    def write_atomic(
        self, path: str, parts: Iterable[bytes | bytearray | memoryview], durable: bool
    ) -> None:
        """Write ``parts`` to ``path`` (over any old content) so readers see all or nothing.

        ``durable``: on stable storage before returning (else at the next ``sync``).
        """
        ...

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` unless it exists; True when this call made it."""
        ...

    def remove(self, path: str) -> bool:
        """Delete the file; True when it existed."""
        ...

    def move(self, src: str, dst: str) -> bool:
        """Move a file over ``dst``; False when ``src`` is gone."""
        ...

    def restore(self, src: str, dst: str) -> bool:
        """Move ``src`` to ``dst`` unless ``dst`` exists; True when moved."""
        ...

    def sync(self) -> None:
        """Put every write made so far on stable storage."""
        ...
