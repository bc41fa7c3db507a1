"""Objects: put/get/has, atomic writes, integrity checks before deserializing, quarantine."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from store_helpers import fake_digest

from mlflowkit.errors import CorruptObjectError, SerializationError, StoreError
from mlflowkit.records import CacheEntry
from mlflowkit.store import Store, open_store, register_serializer, unregister_serializer
from mlflowkit.store.layout import PREPARED as _PREPARED
from mlflowkit.store.layout import TMP_MAX_AGE_S


def object_path(store: Store, digest: str) -> str:
    return f"{store.root}/objects/{digest[:2]}/{digest}"


def flip_byte(store: Store, digest: str, offset_from_end: int = 1) -> None:
    path = object_path(store, digest)
    if store._io.local:
        data = bytearray(Path(path).read_bytes())
        data[-offset_from_end] ^= 0x01
        Path(path).write_bytes(bytes(data))
    else:
        fs = store._io.fs  # type: ignore[union-attr]
        data = bytearray(fs.cat_file(path))
        data[-offset_from_end] ^= 0x01
        fs.pipe_file(path, bytes(data))


@pytest.fixture
def recording_serializer() -> Iterator[list[str]]:
    calls: list[str] = []

    def dump(value: Any) -> bytes:
        calls.append("dump")
        return repr(value).encode()

    def load(data: bytes) -> Any:
        calls.append("load")
        return data.decode()

    register_serializer("test-recording", str, dump, load)
    try:
        yield calls
    finally:
        unregister_serializer("test-recording")


def test_put_get_has_round_trip(any_store: Store) -> None:
    values: list[Any] = [1, "text", [1, 2.5, None], {"a": (1, 2)}, np.arange(6).reshape(2, 3)]
    for i, value in enumerate(values):
        d = fake_digest(f"v{i}")
        assert not any_store.has(d)
        assert any_store.put(value, d) == d
        assert any_store.has(d)
        back = any_store.get(d)
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(back, value)
        else:
            assert back == value and type(back) is type(value)


def test_put_hashes_the_value_when_no_digest_is_given(any_store: Store) -> None:
    from mlflowkit.hashing import hash_value

    value = {"weights": np.linspace(0, 1, 5), "name": "m"}
    d = any_store.put(value)
    assert d == hash_value(value)
    assert len(d) == 64
    assert any_store.get(d)["name"] == "m"


def test_put_is_idempotent_and_keeps_the_first_write(local_store: Store) -> None:
    d = fake_digest("same")
    local_store.put([1, 2], d)
    path = object_path(local_store, d)
    before = os.stat(path)
    assert local_store.put([1, 2], d) == d
    after = os.stat(path)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_info_names_the_serializer_without_loading(any_store: Store) -> None:
    d = any_store.put(np.zeros(3), fake_digest("z"))
    info = any_store.info(d)
    assert info.serializer == "npy"
    assert info.size > info.payload_size > 0
    assert len(info.payload_blake3) == 64


def test_forced_serializer_is_recorded(any_store: Store) -> None:
    d = any_store.put([1, 2], fake_digest("forced"), serializer="pickle")
    assert any_store.info(d).serializer == "pickle"
    assert any_store.get(d) == [1, 2]


def test_missing_object_is_a_clear_store_error(any_store: Store) -> None:
    d = fake_digest("never")
    with pytest.raises(StoreError, match="no object") as info:
        any_store.get(d)
    assert info.value.digest == d


def test_invalid_digest_is_refused(local_store: Store) -> None:
    for bad in ("../../etc/passwd", "a", "", "ab/cd"):
        with pytest.raises(StoreError, match="invalid digest"):
            local_store.get(bad)
        with pytest.raises(StoreError, match="invalid digest"):
            local_store.has(bad)


def test_object_file_format(local_store: Store) -> None:
    d = local_store.put("hello", fake_digest("fmt"))
    data = Path(object_path(local_store, d)).read_bytes()
    assert data[:4] == b"MKOB"
    assert int.from_bytes(data[4:6], "little") == 2
    name_len = int.from_bytes(data[6:8], "little")
    payload_len = int.from_bytes(data[8:16], "little")
    address_len = int.from_bytes(data[48:50], "little")
    assert data[50 : 50 + name_len] == b"json"
    assert data[50 + name_len : 50 + name_len + address_len] == d.encode()  # its own name
    payload = data[50 + name_len + address_len + 4 :]
    assert payload == b'"hello"' and payload_len == len(payload)
    import blake3

    assert data[16:48] == blake3.blake3(payload).digest()


# integrity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [1, 3], ids=["last-byte", "inner-byte"])
def test_flipped_payload_byte_is_caught_before_deserializing(
    any_store: Store, recording_serializer: list[str], offset: int
) -> None:
    d = any_store.put("precious", fake_digest("p"), serializer="test-recording")
    key = fake_digest("key-p")
    any_store.put_cache(CacheEntry(key=key, output_digest=d, step="m:f"))
    assert recording_serializer == ["dump"]
    flip_byte(any_store, d, offset)

    with pytest.raises(CorruptObjectError) as info:
        any_store.get(d)
    assert recording_serializer == ["dump"]  # load never ran on the corrupt payload
    assert info.value.digest == d
    assert d in str(info.value) and "execute again on the next run" in str(info.value)
    # set aside, its cache entry dropped: the next run re-executes the step
    assert not any_store.has(d)
    assert any_store.get_cache(key) is None
    quarantined = any_store._io.listdir(f"{any_store.root}/quarantine")
    assert [f.name.split(".")[0] for f in quarantined] == [d]
    assert any_store.du()["quarantine"]["count"] == 1


@pytest.mark.parametrize(
    "damage",
    ["truncate", "magic", "header-checksum", "extra-bytes", "empty"],
)
def test_damaged_object_files_are_corrupt_not_garbage(local_store: Store, damage: str) -> None:
    d = local_store.put(list(range(100)), fake_digest(damage))
    path = Path(object_path(local_store, d))
    data = path.read_bytes()
    broken = {
        "truncate": data[:-10],
        "magic": b"XXXX" + data[4:],
        "header-checksum": data[:20] + bytes([data[20] ^ 1]) + data[21:],
        "extra-bytes": data + b"\0",
        "empty": b"",
    }[damage]
    path.write_bytes(broken)
    with pytest.raises(CorruptObjectError):
        local_store.get(d)
    assert not local_store.has(d)


def test_verify_finds_and_quarantines_corrupt_objects(any_store: Store) -> None:
    good = [any_store.put(i) for i in range(5)]
    bad = sorted(any_store.put(f"bad{i}") for i in range(2))
    for d in bad:
        flip_byte(any_store, d)
    assert any_store.verify() == bad
    assert all(any_store.has(d) for d in good)
    assert not any(any_store.has(d) for d in bad)
    assert any_store.verify() == []


# atomicity -------------------------------------------------------------------------------------


def test_temp_files_are_never_read_and_old_ones_are_swept(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    with Store(url) as store:
        store.create()
        d = fake_digest("tmp")
        # a writer died after writing part of an object to its temp file (the name of an
        # earlier version, which carries no owner: only its age tells)
        tmp = Path(store.root, "tmp", "123-0-0badcafe.tmp")
        tmp.write_bytes(b"MKOB partial")
        assert not store.has(d)
        with pytest.raises(StoreError, match="no object"):
            store.get(d)
        young = Path(store.root, "tmp", "456-0-1badcafe.tmp")
        young.write_bytes(b"in flight")
        old = time.time() - TMP_MAX_AGE_S - 60
        os.utime(tmp, (old, old))
    _PREPARED.clear()  # as in a new process
    with Store(url) as reopened:  # laying out sweeps stale temp files, never young ones
        assert tmp.exists()  # opening alone changes nothing
        reopened.create()
        assert not tmp.exists()
        assert young.exists()
        assert reopened.du()["tmp"]["count"] == 1


def test_writes_leave_no_temp_files(local_store: Store) -> None:
    for i in range(20):
        local_store.put(np.full(10, i), fake_digest(f"t{i}"))
        local_store.put_cache(
            CacheEntry(key=fake_digest(f"k{i}"), output_digest=fake_digest(f"t{i}"))
        )
    assert os.listdir(Path(local_store.root, "tmp")) == []


def test_durable_false_writes_are_still_whole(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s"), durable=False) as store:
        d = store.put(np.arange(1000), fake_digest("nd"))
        np.testing.assert_array_equal(store.get(d), np.arange(1000))
        assert os.listdir(Path(store.root, "tmp")) == []


def test_large_payload_round_trip(local_store: Store) -> None:
    arr = np.random.default_rng(0).standard_normal(2_000_000)  # 16 MB: multi-read, parallel hash
    d = local_store.put(arr)
    np.testing.assert_array_equal(local_store.get(d), arr)
    assert local_store.verify() == []


def test_unknown_serializer_on_read_is_a_serialization_error(local_store: Store) -> None:
    register_serializer("test-gone", bytes, bytes, bytes)
    try:
        d = local_store.put(b"abc", fake_digest("gone"), serializer="test-gone")
    finally:
        unregister_serializer("test-gone")
    with pytest.raises(SerializationError, match="'test-gone'"):
        local_store.get(d)
    assert local_store.has(d)  # not corrupt: registering the serializer makes it readable


# opening ---------------------------------------------------------------------------------------


def test_default_url_is_env_var_then_dot_mlflowkit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOWKIT_STORE", raising=False)
    with Store() as store:
        assert store.url == str(tmp_path / ".mlflowkit")
        assert not Path(store.url).exists()  # opening creates nothing
        store.create()
        assert Path(store.url, "objects").is_dir()
    monkeypatch.setenv("MLFLOWKIT_STORE", str(tmp_path / "elsewhere"))
    with Store() as store:
        assert store.url == str(tmp_path / "elsewhere")


def test_file_url_and_relative_path_are_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with Store("rel") as a, Store(f"file://{tmp_path}/rel") as b:
        assert a.url == b.url == str(tmp_path / "rel")
        assert a._io.local and b._io.local
        d = a.put(7, fake_digest("seven"))
        assert b.get(d) == 7


def test_open_store_accepts_stores_urls_and_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOWKIT_STORE")  # the tests' own default store
    with Store(str(tmp_path / "x")) as store:
        assert open_store(store) is store
    with open_store(str(tmp_path / "y")) as by_url:
        assert by_url.url == str(tmp_path / "y")
    with open_store(tmp_path / "z") as by_path:
        assert by_path.url == str(tmp_path / "z")
    with open_store(None) as default:
        assert default.url == str(tmp_path / ".mlflowkit")
    with pytest.raises(StoreError, match="expected a Store"):
        open_store(42)  # type: ignore[arg-type]


def test_store_pickles_to_the_same_location(local_store: Store) -> None:
    import pickle

    d = local_store.put("x", fake_digest("pk"))
    with pickle.loads(pickle.dumps(local_store)) as copy:
        assert copy.url == local_store.url and copy.durable == local_store.durable
        assert copy.get(d) == "x"


def test_store_implements_the_contract(local_store: Store) -> None:
    from mlflowkit.store.base import ArtifactStore

    assert isinstance(local_store, ArtifactStore)


def test_a_store_path_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create a store"):
        Store(str(tmp_path / "file"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads, 3.12+
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_opens_its_own_index_connection(local_store: Store) -> None:
    from mlflowkit.records import RunRecord

    local_store.put_run(RunRecord(id="parent", pipeline="p", started_at=1.0))
    assert [r.id for r in local_store.runs()] == ["parent"]
    pid = os.fork()
    if pid == 0:  # child: use the inherited store object, exit without cleanup handlers
        code = 1
        try:
            local_store.put(1, fake_digest("from-child"))
            local_store.put_run(RunRecord(id="child", pipeline="p", started_at=2.0))
            code = 0 if [r.id for r in local_store.runs()] == ["child", "parent"] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [r.id for r in local_store.runs()] == ["child", "parent"]
    assert local_store.du()["objects"]["count"] == 1


def test_a_store_folder_removed_and_opened_again_is_laid_out_again(tmp_path: Path) -> None:
    url = str(tmp_path / "s")
    with Store(url) as store:
        store.put(1, fake_digest("one"))
    shutil.rmtree(url)
    with Store(url) as again:
        again.create()
        areas = sorted(p.name for p in Path(url).iterdir() if p.is_dir())
        assert areas == ["cache", "locks", "objects", "packs", "quarantine", "runs", "tmp"]
        digest = again.put(2, fake_digest("two"))
        assert again.get(digest) == 2


# an object's address ---------------------------------------------------------------------------


def _v1_object(serializer: str, payload: bytes) -> bytes:
    """An object file as earlier versions wrote it (format 1: no address in the header)."""
    import struct
    import zlib

    import blake3

    raw = serializer.encode()
    head = struct.pack(
        "<4sHHQ32s", b"MKOB", 1, len(raw), len(payload), blake3.blake3(payload).digest()
    )
    head += raw
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def test_an_object_copied_over_another_is_corrupt_never_a_hit(any_store: Store) -> None:
    a = any_store.put(np.arange(5))
    b = any_store.put(np.arange(7))
    key = fake_digest("key-a")
    any_store.put_cache(CacheEntry(key=key, output_digest=a, step="m:f"))
    # a mix-up: B's file copied over A's (its bytes and checksums are all fine)
    data = any_store._io.read(object_path(any_store, b))
    assert data is not None
    any_store._io.write_atomic(object_path(any_store, a), (data,), False)
    with pytest.raises(CorruptObjectError) as info:
        any_store.get(a)
    assert info.value.digest == a and b in str(info.value)
    # set aside like any corrupt object: its producer executes again on the next run
    assert not any_store.has(a)
    assert any_store.get_cache(key) is None
    np.testing.assert_array_equal(any_store.get(b), np.arange(7))


def test_verify_rehashes_each_value_against_its_name(any_store: Store) -> None:
    from mlflowkit.hashing import hash_value

    good = any_store.put([1, 2, 3])
    wrong = hash_value("what the caller meant")
    any_store.put("something else", wrong)  # stored under a name its value does not hash to
    assert any_store.verify() == [wrong]
    assert any_store.has(good) and not any_store.has(wrong)


def test_objects_of_the_earlier_format_are_read_and_checked_by_value(local_store: Store) -> None:
    from mlflowkit.hashing import hash_value

    a, b = hash_value("a"), hash_value("b")
    for digest in (a, b):
        path = Path(object_path(local_store, digest))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_v1_object("json", b'"a"'))  # both files hold "a"
    assert local_store.get(a) == "a"  # an earlier version's object still reads
    assert local_store.verify() == [b]
    path = Path(object_path(local_store, b))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_v1_object("json", b'"a"'))
    with pytest.raises(CorruptObjectError, match="hashes to"):
        local_store.get(b)
