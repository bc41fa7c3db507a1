"""The objects seam's contract, run on every implementation mlflowkit ships."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflowkit.store.filesystems import FsspecFiles, LocalFiles
from mlflowkit.store.objects import ObjectStore
from mlflowkit.testing import InMemoryObjects, ObjectStoreContract


class TestLocalFiles(ObjectStoreContract):
    def make_objects(self, tmp_path: Path) -> ObjectStore:
        return LocalFiles(str(tmp_path / "store"))


class TestFsspecMemory(ObjectStoreContract):
    @pytest.fixture
    def objects(self) -> Iterator[ObjectStore]:
        import fsspec

        fs = fsspec.filesystem("memory")
        root = f"/mk-contract-{uuid.uuid4().hex}"
        yield FsspecFiles(fs, root)
        if fs.exists(root):
            fs.rm(root, recursive=True)


class TestInMemoryObjects(ObjectStoreContract):
    def make_objects(self, tmp_path: Path) -> ObjectStore:
        return InMemoryObjects()


class TestFsspecS3(ObjectStoreContract):
    """The contract on a real S3-protocol server (moto's, on 127.0.0.1) through s3fs: exclusive
    creates are conditional writes there."""

    @pytest.fixture
    def objects(self, s3_server: Any, s3_bucket: str) -> ObjectStore:
        files = FsspecFiles(s3_server.filesystem(), f"{s3_bucket}/contract")
        assert files.conditional
        return files
