"""Content digests of values and code: the identity behind every cache key.

Public names
------------
``hash_value(obj) -> str``
    BLAKE3-256 (64 hex characters) of a value's canonical, tagged, prefix-free encoding.
``hash_bytes(data) -> str``
    Plain BLAKE3-256 hex digest of a bytes-like object (multi-threaded when large).
``register_hasher(T)(fn)``
    Teach ``hash_value`` a type: ``fn(obj)`` returns a value it can hash; the digest covers
    that value and the qualified name of the object's type.
``code_digest(fn) -> str``
    Digest of a function's normalized syntax tree and, transitively, of the user code,
    constants, defaults and closure cells it refers to.
``package_versions(fn) -> dict[str, str]``
    Third-party distributions (``name -> version``) that a function's code uses.
``CodeDigester``
    The memo behind ``code_digest`` and ``package_versions``; keep one per run.
``digest_value(obj) -> bytes``
    The 32 raw bytes behind ``hash_value``.

Invariants
----------
* Equal values give equal digests in every process, on every machine, under every
  ``PYTHONHASHSEED``, and for a device array and the equal NumPy array.
* Type is part of a value's identity; dict and set order is not.
* A value that cannot be hashed raises ``HashingError`` naming its type; nothing gets a
  constant, ``repr``, ``id`` or pickle based digest.
* ``import mlflowkit.hashing`` imports neither NumPy, pandas, pyarrow, dask, CuPy nor Numba:
  support for their types loads the first time such a value is seen.

The encoding is specified in ``mlflowkit.hashing.values`` (containers, registry; scalars in
``mlflowkit.hashing._leaves``),
``mlflowkit.hashing.arrays`` (NumPy and device arrays), ``mlflowkit.hashing.frames`` (pandas,
pyarrow) and ``mlflowkit.hashing.code`` (functions).
"""

from __future__ import annotations

from mlflowkit.hashing.code import CodeDigester, code_digest, package_versions
from mlflowkit.hashing.values import (
    digest_value,
    hash_bytes,
    hash_value,
    register_hasher,
)

__all__ = [
    "CodeDigester",
    "code_digest",
    "digest_value",
    "hash_bytes",
    "hash_value",
    "package_versions",
    "register_hasher",
]
