"""What a store creates, recognises and deletes: the marker, read-only access, owners of runs.

A store only deletes what it can tell it wrote; reading never creates or changes one.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlflowkit.errors import StoreError
from mlflowkit.records import RunRecord
from mlflowkit.store import Store, owner
from mlflowkit.store import sqlite_index as index_module
from mlflowkit.store.filesystems import TEMP_NAME
from mlflowkit.store.layout import MARKER, TMP_MAX_AGE_S
from mlflowkit.store.layout import PREPARED as _PREPARED


def old(path: Path, seconds: float = TMP_MAX_AGE_S + 600) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)
    return path


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    return int(out.stdout)


# creating and recognising ----------------------------------------------------------------------


def test_opening_creates_nothing_and_reading_a_non_store_is_a_clear_error(tmp_path: Path) -> None:
    url = tmp_path / "nothing-here"
    with Store(str(url)) as store:
        for read in (store.runs, store.du, lambda: store.lineage("ab" * 32), store.verify):
            with pytest.raises(StoreError, match="no mlflowkit store at") as info:
                read()
            assert "create one by running a pipeline with --store" in str(info.value)
        with pytest.raises(StoreError, match="no mlflowkit store"):
            store.gc()
        assert not store.has("ab" * 32) and store.get_cache("cd" * 32) is None
    assert not url.exists()


@pytest.mark.parametrize("url", ["", "a\x00b"], ids=["empty", "nul"])
def test_an_empty_or_nul_url_is_a_store_error(url: str) -> None:
    with pytest.raises(StoreError, match="invalid store url"):
        Store(url)


def test_the_first_write_lays_out_the_store_with_its_marker(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s")) as store:
        store.put(1)
        marker = json.loads(Path(store.root, MARKER).read_text())
        assert marker["mlflowkit"] == "store"
        assert store.runs() == []


def test_a_store_of_an_earlier_version_is_read_and_then_adopted(tmp_path: Path) -> None:
    root = tmp_path / "old"
    for area in ("objects", "cache", "runs", "tmp", "locks", "packs", "quarantine"):
        (root / area).mkdir(parents=True)
    record = RunRecord(id="r1", pipeline="p", status="succeeded", started_at=1.0)
    (root / "runs" / "r1.json").write_text(json.dumps(record.to_stored()))
    with Store(str(root)) as store:
        assert [r.id for r in store.runs()] == ["r1"]
        assert store.du()["runs"]["count"] == 1
        assert not (root / MARKER).exists()  # reading wrote nothing
        store.gc()
        assert (root / MARKER).exists()  # the first write adopts it


# deleting only what it wrote -------------------------------------------------------------------


def test_a_users_tmp_folder_is_never_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "tmp" / "results.csv"
    results.parent.mkdir()
    results.write_text("a,b\n1,2\n")
    old(results)
    with Store(".") as store:  # as `mlflowkit runs list --store .` opens it
        with pytest.raises(StoreError, match="no mlflowkit store"):
            store.runs()
        _PREPARED.clear()
        store.create()  # as `mlflowkit run ... --store .` does
        store.gc(keep_last=0)
    assert results.read_text() == "a,b\n1,2\n"


def test_gc_never_follows_a_link_out_of_the_store(tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    names = ["notes.txt", "abc.1", "p-1.json", "123-4-deadbeef.tmp"]  # shaped like a store's too
    for name in names:
        (outside / name).write_text("keep")
        old(outside / name)
    with Store(str(tmp_path / "s")) as store:
        store.create()
        for area in ("tmp", "packs", "quarantine"):
            os.rmdir(Path(store.root, area))
            os.symlink(outside, Path(store.root, area))
        report = store.gc(keep_last=0)
        store.drop_packs()
        assert store.sweep_tmp() == 0
    assert report.quarantine_deleted == report.tmp_deleted == 0
    assert sorted(p.name for p in outside.iterdir()) == sorted(names)


def test_gc_deletes_only_names_the_store_makes(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s")) as store:
        store.create()
        foreign = [
            Path(store.root, "objects", "zz", "README"),
            Path(store.root, "cache", "ab", "notes.txt"),
            Path(store.root, "quarantine", "notes.txt"),
            Path(store.root, "tmp", "results.csv"),
        ]
        for path in foreign:
            path.parent.mkdir(exist_ok=True)
            path.write_text("mine")
            old(path)
        store.gc(keep_last=0)
    assert all(p.exists() for p in foreign)


# temp files and runs of processes that died ----------------------------------------------------


def test_temp_files_of_a_dead_writer_are_swept_at_once(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s")) as store:
        store.create()
        tag = owner.host_tag()
        me = os.getpid()
        gone = Path(store.root, "tmp", f"{dead_pid()}-0-0badcafe-{tag}-1.tmp")
        live = Path(store.root, "tmp", f"{me}-0-1badcafe-{tag}-{owner.process_start(me) or 0}.tmp")
        elsewhere = Path(store.root, "tmp", f"{dead_pid()}-0-2badcafe-00000000-1.tmp")
        for path in (gone, live, elsewhere):
            assert TEMP_NAME.fullmatch(path.name)
            path.write_bytes(b"partial")  # all young
        _PREPARED.clear()  # as a new process laying it out
        with Store(store.url) as again:
            again.create()
        assert not gone.exists()  # its writer is provably dead: no need to wait 30 minutes
        assert live.exists() and elsewhere.exists()  # alive, or on another host: wait


def test_a_running_record_of_a_dead_process_reads_as_interrupted(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s")) as store:
        crashed = RunRecord(id="r1", pipeline="p", started_at=1.0)
        crashed.owner = {**owner.owner(), "pid": dead_pid()}
        store.put_run(crashed)
        store.put_run(RunRecord(id="r2", pipeline="p", started_at=2.0))  # this process: alive
        elsewhere = RunRecord(id="r3", pipeline="p", started_at=3.0)
        elsewhere.owner = {"host": "another-host", "pid": 1}
        store.put_run(elsewhere)
        assert [(r.id, r.status) for r in store.runs()] == [
            ("r3", "running"),  # cannot be told from here
            ("r2", "running"),
            ("r1", "interrupted"),
        ]
        assert store.run("r1").status == "interrupted"
        assert store.run("r2").owner["pid"] == os.getpid()
        on_disk = json.loads(Path(store.root, "runs", "r1.started").read_text())
        assert on_disk["status"] == "running"  # reading changed nothing


# a store that cannot be written ----------------------------------------------------------------


def _make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _filled(root: Path) -> str:
    with Store(str(root)) as store:
        digest = store.put([1, 2])
        store.put_run(RunRecord(id="r1", pipeline="p", status="succeeded", started_at=1.0))
        store.runs()  # the index exists, in WAL mode
    return digest


def test_a_read_only_store_is_read_through_a_private_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ro"
    digest = _filled(root)
    # (as root, permissions do not stop writes: say it cannot be written, and check nothing was)
    monkeypatch.setattr(index_module, "_writable", lambda root: False)
    _make_read_only(root)
    before = _snapshot(root)
    try:
        with Store(str(root)) as store:
            assert [r.id for r in store.runs()] == ["r1"]
            assert store.run("r1").status == "succeeded"
            assert store.get(digest) == [1, 2]
            assert store.du()["objects"]["count"] == 1
        assert _snapshot(root) == before
    finally:
        _make_writable(root)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="permissions do not bind root"
)
def test_a_read_only_folder_lists_its_runs_and_refuses_writes_clearly(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    _filled(root)
    _make_read_only(root)
    try:
        with Store(str(root)) as store:
            assert [r.id for r in store.runs()] == ["r1"]
            with pytest.raises(StoreError, match="cannot"):
                store.put("new")
    finally:
        _make_writable(root)


def test_a_failed_write_is_a_store_error_naming_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(str(tmp_path / "s")) as store:
        store.create()

        def full(path: str, parts: object, durable: bool) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(store._io, "_write_atomic", full)
        with pytest.raises(StoreError, match="No space left on device") as info:
            store.put("x")
        assert "free some space" in str(info.value)
        with pytest.raises(StoreError, match="No space left"):
            store.put_run(RunRecord(id="r1", pipeline="p", status="succeeded"))


def test_a_store_written_by_a_newer_mlflowkit_is_refused_untouched(tmp_path: Path) -> None:
    import json

    import mlflowkit as mk
    from mlflowkit.store.layout import MARKER, STORE_FORMAT
    from tests.resources import dag_basic

    url = str(tmp_path / "s")
    dag_basic.chain.plan(n=2).run(store=mk.Store(url))
    marker = Path(url, MARKER)
    doc = json.loads(marker.read_bytes())
    doc.update(format=STORE_FORMAT + 1, created_by="9.0.0")
    marker.write_text(json.dumps(doc))
    before = sorted(p.relative_to(url).as_posix() for p in Path(url).rglob("*") if p.is_file())
    for attempt in (
        lambda: mk.Store(url).runs(),
        lambda: dag_basic.chain.plan(n=3).run(store=mk.Store(url)),
    ):
        with pytest.raises(mk.StoreError, match="newer mlflowkit") as info:
            attempt()
        assert "9.0.0" in str(info.value) and "pip install -U mlflowkit" in str(info.value)
    after = sorted(p.relative_to(url).as_posix() for p in Path(url).rglob("*") if p.is_file())
    assert after == before
