"""``RunFiles``: a store's run records as files under ``runs/``, and how readers see them.

Layer 5 (part of the store's implementation), on the objects seam only.

Invariants:

* A record with status ``running`` lives in ``runs/<id>.started``; the finished record is
  written to ``runs/<id>.json`` (a new name, not over the old: replacing a file makes some
  filesystems flush it at once) and then the ``.started`` file is removed. Readers prefer
  ``.json``. A finished record that cannot be written removes the ``.started`` one, so no
  record claims that a run is still going.
* A running record names its owner (host, boot, pid, start time); once that process is provably
  gone, the run reads as ``interrupted`` (``as_read``); the file is left as it is.
* A record is written in pieces (``encode``): its fields, then its step rows ``ROWS_PER_PART``
  at a time, signed by a running BLAKE3 over the pieces (``formats.sign_run_parts``). The file
  is byte for byte the JSON of ``RunRecord.to_stored()`` (and its signature member), as if
  encoded in one go.
* Run records get no index row when written: every query re-syncs run rows from ``listing()``
  first, so the indexing work is done only when someone asks, not on every run.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from mlflowkit.errors import StoreError
from mlflowkit.records import RunRecord
from mlflowkit.store import owner
from mlflowkit.store.index import RunFile
from mlflowkit.store.layout import NAME, STARTED, check_name
from mlflowkit.store.objects import ObjectStore

__all__ = ["ROWS_PER_PART", "RunFiles", "as_read", "executed"]

#: How many step rows of a run record are encoded (and held) at a time while it is written.
ROWS_PER_PART = 1024


class RunFiles:
    """The run record files of one store (see the module docstring)."""

    __slots__ = ("_files", "_folder", "url")

    def __init__(self, files: ObjectStore, url: str) -> None:
        self._files = files
        self._folder = f"{files.root}/runs"
        self.url = url

    def path(self, run_id: str, suffix: str = ".json") -> str:
        """The file of a finished run (``suffix`` ``STARTED``: of a running one)."""
        check_name(run_id, "run id", self.url)
        return f"{self._folder}/{run_id}{suffix}"

    def read(self, run_id: str) -> bytes | None:
        """A run's record file: the final one, else the one written when it started."""
        data = self._files.read(self.path(run_id))
        return data if data is not None else self._files.read(self.path(run_id, STARTED))

    def encode(self, record: RunRecord) -> Iterator[bytes | memoryview]:
        """The file's bytes, in pieces; a running record without an owner is given this process.

        The pieces are the record's fields (encoded here, at once), then its step rows
        ``ROWS_PER_PART`` at a time (encoded as the pieces are taken), then the end of the
        JSON. Joined, they are ``orjson.dumps(record.to_stored())`` byte for byte; no copy of
        the whole record is made (at 100k steps, that copy and orjson's buffer held ~1.7 KB
        per step at the moment the record was written).

        Raises
        ------
        StoreError
            The record holds something JSON cannot write (raised while the pieces are taken,
            for a step's row).
        """
        if record.status == "running" and not record.owner:
            record.owner = owner.owner()
        head = self._dumps(record, record.stored_head())  # ends in '"steps":[]}'
        return itertools.chain((memoryview(head)[:-2],), self._rows(record), (b"]}",))

    def _rows(self, record: RunRecord) -> Iterator[bytes | memoryview]:
        """The step rows of ``record``'s JSON, comma-separated, without their brackets."""
        for start in range(0, len(record.steps), ROWS_PER_PART):
            if start:
                yield b","
            rows = self._dumps(record, record.stored_rows(start, start + ROWS_PER_PART))
            yield memoryview(rows)[1:-1]

    def _dumps(self, record: RunRecord, value: Any) -> bytes:
        try:
            return orjson.dumps(value)  # steps as rows: see RunRecord.to_stored
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"run record {record.id} is not JSON-able ({exc}); records hold only str, int, "
                "float, bool, None and lists/dicts of those (str keys)",
                url=self.url,
            ) from exc

    def write(self, run_id: str, parts: Iterable[bytes | memoryview], running: bool) -> None:
        """Write a record's file atomically from its pieces (see the module docstring for
        which file)."""
        path = self.path(run_id, STARTED if running else ".json")
        try:
            self._files.write_atomic(path, parts, False)
        except StoreError:
            if not running:
                with contextlib.suppress(OSError):
                    self._files.remove(self.path(run_id, STARTED))
            raise
        if not running:
            self._files.remove(self.path(run_id, STARTED))

    def listing(self) -> list[RunFile]:
        """Every run's record file: ``<id>.json``, or ``<id>.started`` for a run not finished."""
        final: dict[str, RunFile] = {}
        started: dict[str, RunFile] = {}
        for f in self._files.listdir(self._folder):
            for suffix, found in ((".json", final), (STARTED, started)):
                run_id = f.name[: -len(suffix)]
                if f.name.endswith(suffix) and NAME.fullmatch(run_id):
                    found[run_id] = RunFile(run_id, f.size, f"{suffix}:{f.stamp}")
        return [*final.values(), *(rf for i, rf in started.items() if i not in final)]

    def text(self, run_id: str) -> str | None:
        """A run's record file as text (for the index), or None."""
        data = self.read(run_id)
        return None if data is None else data.decode("utf-8", "replace")

    def load(self, run_id: str) -> RunRecord:
        """A run's record as readers see it (``as_read``).

        Raises
        ------
        StoreError
            The file is unreadable.
        """
        data = self.read(run_id)
        try:
            return as_read(RunRecord.from_dict(json.loads(data or b"")))
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(
                f"run record {run_id} in store {self.url} is unreadable ({exc}); delete "
                f"runs/{run_id}.json",
                url=self.url,
            ) from exc


def as_read(record: RunRecord) -> RunRecord:
    """A record as readers see it: ``running`` with a provably dead owner is ``interrupted``."""
    if record.status == "running" and owner.dead(record.owner):
        record.status = "interrupted"
    return record


def executed(record: RunRecord) -> bool:
    """Whether a run executed a step: its record is then signed.

    The record of a fully cached run is not: signing would load the private key and its
    cryptography (~12 ms) into every cached re-run, which takes a few ms; such a record
    points only at results earlier signed runs produced (``verify`` checks the others).
    """
    return any(s.status == "executed" for s in record.steps)
