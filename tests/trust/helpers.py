"""What an attacker with raw write access to a store's files can do, and a small pipeline."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

import mlflowkit as mk
from mlflowkit.store import serializers
from mlflowkit.store.formats import pack_header, payload_blake3
from mlflowkit.trust import keys
from mlflowkit.trust.signing import object_message, sign


class Evil:
    """Unpickling it creates the file ``path`` (what a malicious pickle would do)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


@mk.step
def produce(n: int) -> NDArray[np.float64]:
    return np.arange(n, dtype=np.float64) * 0.5


@mk.step
def consume(x: NDArray[np.float64]) -> float:
    return float(x.sum())


@mk.pipeline
def pair(n: int = 100) -> Any:
    x = produce(n)
    return x, consume(x)


def object_path(store: mk.Store, digest: str) -> Path:
    return Path(store.root, "objects", digest[:2], digest)


def evil_payload(sentinel: Path) -> bytes:
    return pickle.dumps(Evil(str(sentinel)))


def write_object(
    store: mk.Store, digest: str, name: str, payload: bytes, signer: keys.Signer | None = None
) -> None:
    """Write an object file by hand, header recomputed (signed by ``signer`` when given)."""
    signature = b""
    if signer is not None:
        signature = sign(signer, object_message(digest, name, payload_blake3(payload)))
    object_path(store, digest).parent.mkdir(parents=True, exist_ok=True)
    object_path(store, digest).write_bytes(
        pack_header(name, payload, digest, signature=signature) + payload
    )


def write_value(store: mk.Store, value: Any) -> str:
    """Store a safe-format value by hand (no key, no checks); its digest."""
    digest = mk.hash_value(value)
    name, payload = serializers.dumps(value)
    write_object(store, digest, name, bytes(payload))
    return digest


def signer(name: str) -> keys.Signer:
    """Key ``name`` in the session's keys folder (made when missing)."""
    keys.new_key(name, exist_ok=True)
    return keys.load_signer(name)


def use_key(monkeypatch: Any, name: str) -> str:
    """Make this process (and the CLI) sign with key ``name``; its key id."""
    monkeypatch.setenv("MLFLOWKIT_KEY", name)
    return signer(name).key_id


def exists(path: Path) -> bool:
    return os.path.exists(path)
