"""mk.File and mk.Dir: content digests, the stat cache, fsspec filesystems, errors."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import blake3
import fsspec
import pytest

from mlflowkit.errors import HashingError
from mlflowkit.files import Dir, File, stat_cache_info
from mlflowkit.hashing import hash_value

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, data: bytes, *, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if age_s:
        stamp = time.time() - age_s
        os.utime(path, (stamp, stamp))
    return path


@pytest.fixture
def memory_root() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = f"/mk-{uuid.uuid4().hex[:10]}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_file_digest_is_blake3_of_its_bytes(tmp_path: Path) -> None:
    data = os.urandom(1000)
    f = File(write(tmp_path / "a.bin", data))
    assert f.digest() == blake3.blake3(data).hexdigest()
    big = os.urandom(3 << 20)
    assert File(write(tmp_path / "big.bin", big)).digest() == blake3.blake3(big).hexdigest()
    assert File(write(tmp_path / "empty", b"")).digest() == blake3.blake3(b"").hexdigest()


def test_files_hash_by_content_not_path(tmp_path: Path) -> None:
    a = File(write(tmp_path / "a.csv", b"x,y\n1,2\n"))
    b = File(write(tmp_path / "sub" / "b.csv", b"x,y\n1,2\n"))
    assert hash_value(a) == hash_value(b)
    assert hash_value(a) != hash_value(b"x,y\n1,2\n")
    write(tmp_path / "a.csv", b"x,y\n1,3\n")
    assert hash_value(a) != hash_value(b)
    assert hash_value(File(tmp_path / "a.csv", anon=True)) == hash_value(a)  # options not hashed


def test_file_is_frozen_comparable_and_picklable(tmp_path: Path) -> None:
    f = File(tmp_path / "a.txt", key="secret")
    with pytest.raises(AttributeError, match="frozen"):
        f.path = "other"  # type: ignore[misc]
    assert f.path == str(tmp_path / "a.txt")
    assert f == File(str(tmp_path / "a.txt"), key="secret")
    assert f != File(str(tmp_path / "a.txt"))
    assert f != Dir(str(tmp_path / "a.txt"), key="secret")
    assert hash(f) == hash(File(str(tmp_path / "a.txt")))
    clone = pickle.loads(pickle.dumps(f))
    assert clone == f and clone.storage_options == {"key": "secret"}
    assert "secret" not in repr(f)


def test_open_reads_local_and_file_urls(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", b"hello")
    with File(path).open() as fh:
        assert fh.read() == b"hello"
    with File(f"file://{path}").open("r") as fh:
        assert fh.read() == "hello"
    assert File(f"file://{path}").digest() == File(path).digest()


def test_missing_and_wrong_kinds_fail_with_hashing_error(tmp_path: Path) -> None:
    with pytest.raises(HashingError, match="no such file"):
        hash_value(File(tmp_path / "missing.csv"))
    with pytest.raises(HashingError, match=r"mk\.Dir"):
        File(tmp_path).digest()
    with pytest.raises(HashingError, match="expected an existing directory"):
        Dir(tmp_path / "nope").digests()
    write(tmp_path / "f", b"1")
    with pytest.raises(HashingError, match="not a directory"):
        Dir(tmp_path / "f").digests()
    with pytest.raises(HashingError, match="non-empty"):
        File("")


def test_dir_digest_covers_relative_paths_and_contents(tmp_path: Path) -> None:
    def tree(root: Path) -> Dir:
        write(root / "b.txt", b"b")
        write(root / "a" / "x.txt", b"x")
        write(root / "a" / "y" / "z.bin", b"z")
        return Dir(root)

    one, two = tree(tmp_path / "one"), tree(tmp_path / "two")
    assert one.files() == ["a/x.txt", "a/y/z.bin", "b.txt"]
    assert one.digests()["b.txt"] == blake3.blake3(b"b").hexdigest()
    assert hash_value(one) == hash_value(two)
    (tmp_path / "two" / "a" / "x.txt").rename(tmp_path / "two" / "a" / "w.txt")
    assert hash_value(one) != hash_value(two)
    base = hash_value(one)
    write(tmp_path / "one" / "new.txt", b"")
    assert hash_value(one) != base
    (tmp_path / "one" / "new.txt").unlink()
    assert hash_value(one) == base
    (tmp_path / "one" / "empty-dir").mkdir()
    assert hash_value(one) == base  # only files count
    with one.open("a/x.txt") as fh:
        assert fh.read() == b"x"


def test_unchanged_old_files_are_not_reread(tmp_path: Path) -> None:
    f = File(write(tmp_path / "old.bin", b"old content", age_s=100))
    first = f.digest()
    before = stat_cache_info()
    assert f.digest() == first
    after = stat_cache_info()
    assert after.hits == before.hits + 1
    assert after.reads == before.reads


def test_recently_modified_files_are_always_reread(tmp_path: Path) -> None:
    f = File(write(tmp_path / "fresh.bin", b"fresh"))
    f.digest()
    before = stat_cache_info()
    f.digest()
    assert stat_cache_info().reads == before.reads + 1


def test_rewrite_with_same_size_and_mtime_is_detected(tmp_path: Path) -> None:
    path = write(tmp_path / "same.bin", b"AAAA", age_s=100)
    stamp = path.stat().st_mtime_ns
    first = File(path).digest()
    path.write_bytes(b"BBBB")
    os.utime(path, ns=(stamp, stamp))
    assert path.stat().st_size == 4 and path.stat().st_mtime_ns == stamp
    assert File(path).digest() == blake3.blake3(b"BBBB").hexdigest() != first


_CHILD = """
import sys
from mlflowkit.files import File, stat_cache_info
print(File(sys.argv[1]).digest(), *stat_cache_info())
"""


def test_stat_cache_persists_across_processes(tmp_path: Path) -> None:
    path = write(tmp_path / "persist.bin", b"kept", age_s=100)
    expected = File(path).digest()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=dict(os.environ),
    )
    digest, hits, reads = out.stdout.split()
    assert digest == expected
    assert (int(hits), int(reads)) == (1, 0)
    assert Path(os.environ["MLFLOWKIT_CACHE_DIR"], "filestat.sqlite").exists()


def test_memory_filesystem_files_and_dirs(memory_root: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{memory_root}/d/a.txt", b"alpha")
    fs.pipe(f"{memory_root}/d/sub/b.txt", b"beta")
    f = File(f"memory://{memory_root}/d/a.txt")
    assert f.digest() == blake3.blake3(b"alpha").hexdigest()
    with f.open() as fh:
        assert fh.read() == b"alpha"
    d = Dir(f"memory://{memory_root}/d")
    assert d.files() == ["a.txt", "sub/b.txt"]
    before = hash_value(d)
    reads = stat_cache_info().reads
    fs.pipe(f"{memory_root}/d/a.txt", b"ALPHA")  # no checksum or mtime: always re-read
    assert f.digest() == blake3.blake3(b"ALPHA").hexdigest()
    assert stat_cache_info().reads == reads + 1
    assert hash_value(d) != before
    with d.open("sub/b.txt") as fh:
        assert fh.read() == b"beta"
    with pytest.raises(HashingError, match="no such file"):
        File(f"memory://{memory_root}/missing").digest()
    with pytest.raises(HashingError, match="directory"):
        Dir(f"memory://{memory_root}/d/a.txt").digests()


def test_local_and_memory_dirs_with_equal_files_hash_equal(
    tmp_path: Path, memory_root: str
) -> None:
    write(tmp_path / "d" / "a.txt", b"same")
    fsspec.filesystem("memory").pipe(f"{memory_root}/d/a.txt", b"same")
    assert hash_value(Dir(tmp_path / "d")) == hash_value(Dir(f"memory://{memory_root}/d"))
    assert hash_value(File(tmp_path / "d" / "a.txt")) == hash_value(
        File(f"memory://{memory_root}/d/a.txt")
    )
