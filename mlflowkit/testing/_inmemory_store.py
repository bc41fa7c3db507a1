"""``InMemoryObjects`` and ``InMemoryIndex``: test doubles of the store's two seams.

They implement :class:`~mlflowkit.store.objects.ObjectStore` and
:class:`~mlflowkit.store.index.Index` with dicts and one lock each, and pass the same contract
suites as the real implementations (``ObjectStoreContract``, ``IndexContract``): a test that
needs a store's files or index without a disk uses them, and a plugin author reads them as the
smallest complete implementation of each contract.

Invariants
----------
* Every operation holds the double's lock for its whole duration, so each is atomic and
  ``create_exclusive`` is truly exclusive between threads of this process.
* ``Index.registry(fn)`` holds the lock while ``fn`` runs and restores the registry's rows as
  they were when ``fn`` raises: all or nothing, like a transaction.
* Nothing is shared between instances, nothing survives the process; no fsync happens (``sync``
  is a no-op), so neither double says anything about durability.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from mlflowkit.errors import StoreError
from mlflowkit.records import RunRecord
from mlflowkit.store.index import (
    ObjectRow,
    PackedRow,
    PromotionRow,
    RegistryTransaction,
    RunFile,
    StageRow,
    VersionRow,
)
from mlflowkit.store.objects import FileStat

if TYPE_CHECKING:
    from mlflowkit.records import CacheEntry

__all__ = ["InMemoryIndex", "InMemoryObjects"]

_T = TypeVar("_T")


class InMemoryObjects:
    """An :class:`~mlflowkit.store.objects.ObjectStore` kept in a dict (path -> bytes).

    Parameters
    ----------
    root:
        The folder every path lives under (any string; ``"mem"`` by default).
    """

    local = False

    def __init__(self, root: str = "mem") -> None:
        self.root = root.rstrip("/")
        self._files: dict[str, tuple[bytes, float, int]] = {}  # path -> data, mtime, serial
        self._serial = 0
        self._lock = threading.RLock()

    def _put(self, path: str, data: bytes) -> None:
        self._serial += 1
        self._files[path] = (data, time.time(), self._serial)

    def read(self, path: str) -> bytes | None:
        with self._lock:
            got = self._files.get(path)
        return None if got is None else got[0]

    def read_split(self, path: str, head: int) -> tuple[bytes, Any] | None:
        data = self.read(path)
        return None if data is None else (data, None)

    def exists(self, path: str) -> bool:
        with self._lock:
            return path in self._files

    def age(self, path: str) -> float | None:
        with self._lock:
            got = self._files.get(path)
        return None if got is None else max(0.0, time.time() - got[1])

    def _below(self, folder: str) -> list[tuple[str, bytes, float, int]]:
        prefix = folder.rstrip("/") + "/"
        with self._lock:
            return [
                (path[len(prefix) :], *entry)
                for path, entry in self._files.items()
                if path.startswith(prefix)
            ]

    def listdir(self, folder: str) -> list[FileStat]:
        return [
            FileStat(name, len(data), f"{serial}", mtime)
            for name, data, mtime, serial in self._below(folder)
            if "/" not in name
        ]

    def walk(self, folder: str) -> list[FileStat]:
        found = [
            FileStat(name, len(data), f"{serial}", mtime)
            for name, data, mtime, serial in self._below(folder)
            if name.count("/") == 1
        ]
        return sorted(found, key=lambda f: f.name)

    def own_dir(self, folder: str) -> bool:
        return True  # no links in a dict

    def subfolders(self, folder: str) -> set[str] | None:
        return {name.partition("/")[0] for name, *_ in self._below(folder) if "/" in name}

    def write_atomic(
        self, path: str, parts: Iterable[bytes | bytearray | memoryview], durable: bool
    ) -> None:
        try:
            data = b"".join(bytes(p) for p in parts)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"cannot write {path}: {exc}", url=self.root) from exc
        with self._lock:
            self._put(path, data)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        with self._lock:
            if path in self._files:
                return False
            self._put(path, bytes(data))
            return True

    def remove(self, path: str) -> bool:
        with self._lock:
            return self._files.pop(path, None) is not None

    def move(self, src: str, dst: str) -> bool:
        with self._lock:
            got = self._files.pop(src, None)
            if got is None:
                return False
            self._put(dst, got[0])
            return True

    def restore(self, src: str, dst: str) -> bool:
        with self._lock:
            if dst in self._files or src not in self._files:
                return False
            return self.move(src, dst)

    def sync(self) -> None:
        return None


class _Registry:
    """The registry's rows of an ``InMemoryIndex``."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, int], VersionRow] = {}
        self.promotions: dict[int, PromotionRow] = {}
        self.stages: dict[tuple[str, str], int] = {}
        self.top_seq = 0

    def version_rows(self, name: str | None = None) -> list[VersionRow]:
        rows = [r for r in self.versions.values() if name is None or r.name == name]
        return sorted(rows, key=lambda r: (r.name, r.version))

    def promotion_rows(self, name: str | None = None) -> list[PromotionRow]:
        rows = [r for r in self.promotions.values() if name is None or r.name == name]
        return sorted(rows, key=lambda r: r.seq or 0)

    def stage_rows(self) -> list[StageRow]:
        return [StageRow(n, s, v) for (n, s), v in sorted(self.stages.items())]

    def insert_version(self, row: VersionRow) -> bool:
        if (row.name, row.version) in self.versions:
            return False
        self.versions[(row.name, row.version)] = row
        return True

    def update_version(self, name: str, version: int, created_by: str, record: bytes) -> None:
        row = self.versions.get((name, version))
        if row is not None:
            self.versions[(name, version)] = _replace(row, created_by=created_by, record=record)

    def insert_promotion(self, row: PromotionRow) -> int | None:
        seq = row.seq if row.seq is not None else self.top_seq + 1
        if seq in self.promotions:
            return None
        self.promotions[seq] = _replace(row, seq=seq)
        self.top_seq = max(self.top_seq, seq)
        return seq

    def update_promotion(self, seq: int, by: str, record: bytes) -> None:
        row = self.promotions.get(seq)
        if row is not None:
            self.promotions[seq] = _replace(row, by=by, record=record)

    def set_stage(self, name: str, stage: str, version: int) -> None:
        self.stages[(name, stage)] = version


def _replace(row: Any, **changes: Any) -> Any:
    return row._replace(**changes)


class InMemoryIndex:
    """An :class:`~mlflowkit.store.index.Index` kept in dicts (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._built = False
        self._objects: dict[str, ObjectRow] = {}
        self._cache: dict[str, tuple[CacheEntry, int]] = {}
        self._packed: dict[str, PackedRow] = {}
        self._runs: dict[str, tuple[RunFile, RunRecord]] = {}
        self._registry = _Registry()

    # lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        return None

    def replaced(self) -> bool:
        return False

    def is_built(self) -> bool:
        return self._built

    def rebuild(
        self,
        objects: Iterable[ObjectRow],
        caches: Iterable[tuple[CacheEntry, int]],
        runs: Iterable[tuple[RunFile, str]],
        *,
        clear: bool,
        packed: Iterable[PackedRow] = (),
    ) -> None:
        objects, caches, runs = list(objects), list(caches), list(runs)
        with self._lock:
            if clear:
                self._objects, self._cache, self._runs, self._packed = {}, {}, {}, {}
            self._add(objects, caches, packed)
            for run_file, text in runs:
                record = _parse_run(text)
                if record is not None:
                    self._runs[run_file.run_id] = (run_file, record)
            self._built = True

    # objects and cache entries ---------------------------------------------------------------
    def _add(
        self,
        objects: Iterable[ObjectRow],
        caches: Iterable[tuple[CacheEntry, int]],
        packed: Iterable[PackedRow] = (),
    ) -> None:
        for place in packed:
            self._packed[place.name] = place
        for row in objects:
            self._objects[row.digest] = row
        for entry, size in caches:
            self._cache[entry.key] = (entry, size)

    def add_batch(
        self,
        objects: Sequence[ObjectRow],
        caches: Sequence[tuple[CacheEntry, int]],
        packed: Sequence[PackedRow] = (),
    ) -> None:
        with self._lock:
            self._add(objects, caches, packed)

    def find_packed(self, name: str) -> PackedRow | None:
        with self._lock:
            return self._packed.get(name)

    def find_packed_many(self, names: Sequence[str]) -> dict[str, PackedRow]:
        with self._lock:
            return {n: self._packed[n] for n in names if n in self._packed}

    def packed_segments(self) -> set[str]:
        with self._lock:
            return {p.segment for p in self._packed.values()}

    def remove_objects(self, digests: Iterable[str]) -> None:
        with self._lock:
            for digest in digests:
                self._objects.pop(digest, None)
                self._packed.pop(f"o:{digest}", None)

    def remove_cache(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._cache.pop(key, None)
                self._packed.pop(f"c:{key}", None)

    def cache_keys_for(self, digest: str) -> list[str]:
        with self._lock:
            return [k for k, (e, _) in self._cache.items() if e.output_digest == digest]

    # runs and lineage ------------------------------------------------------------------------
    def sync_runs(self, listed: Iterable[RunFile], read: Callable[[str], str | None]) -> None:
        listed = list(listed)
        with self._lock:
            known = {run_id: (f.size, f.stamp) for run_id, (f, _) in self._runs.items()}
        changed: list[tuple[RunFile, RunRecord]] = []
        for f in listed:
            if known.get(f.run_id) != (f.size, f.stamp):
                text = read(f.run_id)
                record = None if text is None else _parse_run(text)
                if record is not None:
                    changed.append((f, record))
        seen = {f.run_id for f in listed}
        with self._lock:
            for run_id in [r for r in self._runs if r not in seen]:
                del self._runs[run_id]
            for f, record in changed:
                self._runs[f.run_id] = (f, record)

    def _newest_first(self, records: Iterable[RunRecord]) -> list[RunRecord]:
        return sorted(records, key=lambda r: (r.started_at, r.id), reverse=True)

    def run_records(self, run_ids: Iterable[str] | None = None) -> list[RunRecord]:
        with self._lock:
            if run_ids is None:
                found = [r for _, r in self._runs.values()]
            else:
                found = [self._runs[i][1] for i in set(run_ids) if i in self._runs]
        return [copy.deepcopy(r) for r in self._newest_first(found)]

    def run_ids(self, prefix: str = "") -> list[str]:
        with self._lock:
            found = [r for _, r in self._runs.values() if r.id.startswith(prefix)]
        return [r.id for r in self._newest_first(found)]

    def upstream_runs(self, digest: str) -> set[str]:
        with self._lock:
            steps = [
                (run_id, s.output_digest, s.inputs)
                for run_id, (_, record) in self._runs.items()
                for s in record.steps
            ]
        runs: set[str] = set()
        seen = {digest}
        frontier = [digest]
        while frontier:
            current = frontier.pop()
            for run_id, output, inputs in steps:
                if output != current:
                    continue
                runs.add(run_id)
                for d in json.loads(json.dumps(inputs or {})).values():
                    if isinstance(d, str) and d not in seen:
                        seen.add(d)
                        frontier.append(d)
        return runs

    def digests_with_prefix(self, prefix: str, limit: int = 20) -> list[str]:
        with self._lock:
            found = {d for d in self._objects if d.startswith(prefix)}
            for _, record in self._runs.values():
                found.update(
                    s.output_digest
                    for s in record.steps
                    if s.output_digest and s.output_digest.startswith(prefix)
                )
        return sorted(found)[:limit]

    # the registry ----------------------------------------------------------------------------
    def registry(self, fn: Callable[[RegistryTransaction], _T]) -> _T:
        with self._lock:
            saved = copy.deepcopy(self._registry)
            try:
                return fn(self._registry)
            except BaseException:
                self._registry = saved
                raise

    def version_rows(self, name: str | None = None) -> list[VersionRow]:
        with self._lock:
            return self._registry.version_rows(name)

    def promotion_rows(self, name: str | None = None) -> list[PromotionRow]:
        with self._lock:
            return self._registry.promotion_rows(name)

    def stage_rows(self) -> list[StageRow]:
        with self._lock:
            return self._registry.stage_rows()

    def published_digests(self) -> list[str]:
        with self._lock:
            return sorted({r.digest for r in self._registry.versions.values()})


def _parse_run(text: str) -> RunRecord | None:
    try:
        data = json.loads(text)
        return RunRecord.from_dict(data) if isinstance(data, dict) else None
    except (ValueError, TypeError, KeyError):
        return None
