"""Ed25519 signing keys: where they live, how they are made, loaded and named.

Keys live in ``$MLFLOWKIT_KEYS_DIR``, else ``$XDG_CONFIG_HOME/mlflowkit/keys``, else
``~/.config/mlflowkit/keys``. A key ``NAME`` is two files:

``NAME.key``   the 32-byte private seed, hex, one line (mode 0600, in a 0700 folder)
``NAME.pub``   its key id and public key, hex: ``ed25519:<id> <64 hex>``

A key id is ``ed25519:`` + the first 32 hex characters of the BLAKE3 of the raw 32-byte
public key: it names a key, and a signature (which carries the public key) proves it.

The process signs with ``$MLFLOWKIT_KEY`` (a key name or a path to a ``.key`` file) when set,
else with the key named ``default``, made on first use.

Invariants:

* A private key file is created with mode 0600 (``O_EXCL``: never overwritten); a key that
  exists is never replaced.
* ``cryptography`` is imported only here, and only when a key is made, loaded or used.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from mlflowkit.errors import MlflowkitError

__all__ = [
    "DEFAULT_KEY",
    "KeyInfo",
    "Signer",
    "key_id_of",
    "keys_dir",
    "list_keys",
    "load_key_id",
    "load_signer",
    "new_key",
    "verify_signature",
]

DEFAULT_KEY = "default"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
KEY_ID = re.compile(r"ed25519:[0-9a-f]{32}")
_lock = threading.Lock()
_loaded: dict[str, Signer] = {}


class KeyFileError(MlflowkitError):
    """A key cannot be made, found or read (the message says which and how to fix it)."""


def keys_dir() -> Path:
    """The folder holding this user's keys (see the module docstring)."""
    explicit = os.environ.get("MLFLOWKIT_KEYS_DIR")
    if explicit:
        return Path(explicit)
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "mlflowkit" / "keys"


def key_id_of(public: bytes) -> str:
    """The key id of a raw 32-byte Ed25519 public key."""
    return "ed25519:" + blake3.blake3(public).hexdigest()[:32]


@dataclass(frozen=True)
class KeyInfo:
    """A key in the keys folder: its name, id, public key (hex) and private key file."""

    name: str
    key_id: str
    public_hex: str
    path: Path


class Signer:
    """A loaded private key: signs bytes; knows its public key and id."""

    def __init__(self, seed: bytes, name: str = "") -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id_of(self.public)
        self.name = name

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return bytes(self._key.sign(message))

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, {self.key_id})"


def verify_signature(public: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if len(public) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeyFileError(
            f"invalid key name {name!r}: expected 1 to 64 characters from [A-Za-z0-9_.-], "
            "starting with a letter or digit"
        )
    return name


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` with ``data`` and ``mode``; False when it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)  # whatever the umask says
    finally:
        os.close(fd)
    return True


def new_key(name: str, *, exist_ok: bool = False) -> KeyInfo:
    """Make key ``name`` in the keys folder; its info.

    Raises
    ------
    KeyFileError
        The name is invalid, or a key of that name exists (unless ``exist_ok``).
    """
    _check_name(name)
    folder = keys_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{name}.key"
    seed = os.urandom(32)
    if not _write_new(path, seed.hex().encode() + b"\n", 0o600):
        if exist_ok:
            return _info(name, path)
        raise KeyFileError(
            f"a key named {name!r} exists already ({path}); keys are never replaced: choose "
            "another name, or delete both of its files yourself"
        )
    signer = Signer(seed, name)
    pub = folder / f"{name}.pub"
    tmp = folder / f".{name}.pub.{os.getpid()}"
    tmp.write_text(f"{signer.key_id} {signer.public.hex()}\n")
    os.replace(tmp, pub)
    return KeyInfo(name, signer.key_id, signer.public.hex(), path)


def _read_seed(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
        seed = bytes.fromhex(text)
    except FileNotFoundError:
        raise KeyFileError(
            f"no key file {path}; make one with `mlflowkit keys new NAME`, or set "
            "$MLFLOWKIT_KEY to an existing key's name or path"
        ) from None
    except (OSError, ValueError) as exc:
        raise KeyFileError(
            f"cannot read key file {path} ({exc}); expected 64 hex characters"
        ) from None
    if len(seed) != 32:
        raise KeyFileError(f"key file {path} holds {len(seed)} bytes, expected a 32-byte seed")
    return seed


def _info(name: str, path: Path) -> KeyInfo:
    signer = Signer(_read_seed(path), name)
    return KeyInfo(name, signer.key_id, signer.public.hex(), path)


def list_keys() -> list[KeyInfo]:
    """The keys in the keys folder, by name."""
    folder = keys_dir()
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.key")):
        try:
            out.append(_info(path.stem, path))
        except KeyFileError:
            continue
    return out


def _resolve(spec: str | os.PathLike[str] | None) -> tuple[str, Path]:
    """``(name, path)`` of the key ``spec`` names (None: ``$MLFLOWKIT_KEY``, else default)."""
    if spec is None:
        spec = os.environ.get("MLFLOWKIT_KEY") or DEFAULT_KEY
    text = os.fspath(spec)
    if os.sep in text or text.endswith(".key"):
        path = Path(text).expanduser()
        return path.stem, path
    return _check_name(text), keys_dir() / f"{text}.key"


def load_key_id(spec: str | os.PathLike[str] | None = None) -> str:
    """The key id of the key ``spec`` names, read from its ``.pub`` file when it has one.

    Reading an id needs no cryptography (a fully cached run never imports it); a key without
    a ``.pub`` file (or the default key, not made yet) is loaded instead.
    """
    _, path = _resolve(spec)
    try:
        text = path.with_suffix(".pub").read_text().split()
    except OSError:
        text = []
    if len(text) == 2 and KEY_ID.fullmatch(text[0]):
        try:
            public = bytes.fromhex(text[1])
        except ValueError:
            public = b""
        if key_id_of(public) == text[0] and path.exists():
            return text[0]
    return load_signer(spec).key_id


def load_signer(spec: str | os.PathLike[str] | None = None) -> Signer:
    """The signer ``spec`` names (a key name or ``.key`` path; None: the process's key).

    The key named ``default`` is made on first use; any other must exist.

    Raises
    ------
    KeyFileError
        The key does not exist or cannot be read.
    """
    name, path = _resolve(spec)
    cache = str(path.absolute())
    with _lock:
        found = _loaded.get(cache)
        if found is not None:
            return found
        if name == DEFAULT_KEY and path.parent == keys_dir() and not path.exists():
            new_key(DEFAULT_KEY, exist_ok=True)
        signer = Signer(_read_seed(path), name)
        _loaded[cache] = signer
        return signer


def _reset_cache() -> None:
    """Forget loaded keys (tests that switch keys folders)."""
    with _lock:
        _loaded.clear()


def describe(obj: Any) -> str:
    """A short text for a key id or None (for messages)."""
    return "an unsigned writer" if obj is None else str(obj)
