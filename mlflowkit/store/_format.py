"""The on-disk formats of a store: object files, cache-entry files, run-record references.

Object file (little-endian)::

    "MKOB" | u16 format version (2) | u16 len(name) | u64 len(payload) | 32 B BLAKE3(payload)
    | u16 len(address) | serializer name (ASCII) | address (ASCII)
    | u32 CRC-32 of everything before it | payload

The *address* is the digest the object is stored under (its file name): the header binds the
object to its own name, so a file copied or renamed over another object's is found out on
read by comparing one string, without hashing the value again. Format 1 (written by earlier
versions) has no ``u16 len(address)`` and no address; it is still read (see ``parse_header``).

Cache-entry file (valid JSON, written byte for byte in this shape)::

    {"checksum":"<64 hex: BLAKE3 of the entry's JSON bytes>","entry":<CacheEntry JSON>}

Cache-pack file (the cache entries one pipeline's last run used, read in one go), the same
shape with a list of ``[key, output_digest, stored, meta]`` (what a cache hit needs)::

    {"checksum":"<64 hex: BLAKE3 of the list JSON>","entry":[["<key>","<digest>",true,{}],...]}

Invariants:

* A header is trusted only after its CRC-32 matches; a payload only after its length and its
  BLAKE3 match the header. Anything else raises :class:`CorruptFile` (never a half result).
* A format-2 object is read only under the address its header names: the store compares it
  with the digest asked for (a mismatch is :class:`CorruptFile`).
* A cache-entry (or cache-pack) file decodes only when its checksum matches the exact bytes of
  the JSON it seals; anything else decodes to None.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any

import blake3
import orjson

from mlflowkit.errors import StoreError
from mlflowkit.records import CacheEntry

__all__ = [
    "ADDRESS_MAX",
    "HEAD_MAX",
    "CorruptFile",
    "decode_entry",
    "decode_pack",
    "encode_entry",
    "encode_pack",
    "pack_header",
    "parse_header",
    "payload_blake3",
    "template_digests",
]

_MAGIC = b"MKOB"
_FORMAT = 2
_FORMAT_UNBOUND = 1  # earlier versions: no address in the header
_FIXED = struct.Struct("<4sHHQ32s")
_ADDRESS_LEN = struct.Struct("<H")
_CRC = struct.Struct("<I")
ADDRESS_MAX = 200  # the longest name a store accepts for an object
HEAD_MAX = _FIXED.size + _ADDRESS_LEN.size + 64 + ADDRESS_MAX + _CRC.size
_ENTRY_HEAD = b'{"checksum":"'
_ENTRY_MID = b'","entry":'
_ENTRY_RAW = len(_ENTRY_HEAD) + 64 + len(_ENTRY_MID)
_PARALLEL_HASH_BYTES = 4 << 20


class CorruptFile(Exception):
    """An object file does not pass its integrity checks (the reason is the message)."""


def payload_blake3(data: bytes | bytearray | memoryview) -> bytes:
    """The 32-byte BLAKE3 of a payload (multi-threaded for large ones)."""
    threads = blake3.blake3.AUTO if len(data) >= _PARALLEL_HASH_BYTES else 1
    return bytes(blake3.blake3(data, max_threads=threads).digest())


def pack_header(name: str, payload: bytes, address: str) -> bytes:
    """The header to write before ``payload`` serialized with ``name``, stored as ``address``."""
    raw = name.encode("ascii")
    where = address.encode("ascii")
    head = b"".join(
        (
            _FIXED.pack(_MAGIC, _FORMAT, len(raw), len(payload), payload_blake3(payload)),
            _ADDRESS_LEN.pack(len(where)),
            raw,
            where,
        )
    )
    return head + _CRC.pack(zlib.crc32(head))


def parse_header(buf: bytes) -> tuple[str, int, bytes, int, str | None]:
    """``(serializer, payload length, payload BLAKE3, header length, address)``.

    ``address`` is None for a format-1 object (written before headers named their address).

    Raises
    ------
    CorruptFile
        The header is short, garbled, of an unknown format, or fails its CRC-32.
    """
    if len(buf) < _FIXED.size:
        raise CorruptFile(f"file is {len(buf)} bytes, shorter than an object header")
    magic, version, name_len, payload_len, checksum = _FIXED.unpack_from(buf)
    if magic != _MAGIC:
        raise CorruptFile("bad magic bytes")
    start = _FIXED.size
    address_len = 0
    if version == _FORMAT:
        if len(buf) < start + _ADDRESS_LEN.size:
            raise CorruptFile("truncated header")
        (address_len,) = _ADDRESS_LEN.unpack_from(buf, start)
        start += _ADDRESS_LEN.size
    end = start + name_len + address_len
    if len(buf) < end + _CRC.size:
        raise CorruptFile("truncated header")
    (crc,) = _CRC.unpack_from(buf, end)
    if crc != zlib.crc32(buf[:end]):
        raise CorruptFile("header checksum mismatch")
    if version not in (_FORMAT, _FORMAT_UNBOUND):
        raise CorruptFile(f"unknown object format version {version}")
    try:
        name = buf[start : start + name_len].decode("ascii")
        address = buf[start + name_len : end].decode("ascii") if version == _FORMAT else None
    except UnicodeDecodeError:
        raise CorruptFile("header names are not ASCII") from None
    return name, payload_len, checksum, end + _CRC.size, address


def encode_entry(entry: CacheEntry) -> bytes:
    """The bytes of a cache-entry file.

    Raises
    ------
    StoreError
        The entry holds something JSON cannot write (its ``meta``, usually).
    """
    try:
        raw = orjson.dumps(entry.to_dict(), option=orjson.OPT_SORT_KEYS)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"cache entry {entry.key} is not JSON-able ({exc}); its meta must hold only str, "
            "64-bit int, float, bool, None and lists/dicts of those (str keys)"
        ) from exc
    return _seal(raw)


def decode_entry(data: bytes) -> CacheEntry | None:
    """The entry in a cache-entry file, or None when the file is damaged in any way."""
    fields = _unseal(data)
    if not isinstance(fields, dict):
        return None
    try:
        return CacheEntry.from_dict(fields)
    except TypeError:
        return None


def encode_pack(entries: list[CacheEntry]) -> bytes:
    """The bytes of a cache-pack file holding ``entries``.

    Raises
    ------
    StoreError
        An entry holds something JSON cannot write (see ``encode_entry``).
    """
    try:
        raw = orjson.dumps([(e.key, e.output_digest, e.stored, e.meta) for e in entries])
    except (TypeError, ValueError) as exc:
        raise StoreError(f"a cache pack entry is not JSON-able ({exc})") from exc
    return _seal(raw)


def decode_pack(data: bytes) -> dict[str, CacheEntry] | None:
    """The entries of a cache-pack file by key, or None when the file is damaged in any way."""
    items = _unseal(data)
    if not isinstance(items, list):
        return None
    out = {}
    for item in items:
        if not (isinstance(item, list) and len(item) == 4):
            return None
        key, digest, stored, meta = item
        if not (type(key) is str and type(digest) is str and type(stored) is bool
                and type(meta) is dict):  # fmt: skip
            return None
        out[key] = CacheEntry(key, digest, "", stored, None, meta)  # positional: ~2x faster
    return out


def _seal(raw: bytes) -> bytes:
    return b"".join((_ENTRY_HEAD, blake3.blake3(raw).hexdigest().encode(), _ENTRY_MID, raw, b"}"))


def _unseal(data: bytes) -> Any:
    """The JSON value sealed in ``data``, or None when the checksum or framing is wrong."""
    if not (data.startswith(_ENTRY_HEAD) and data[_ENTRY_RAW - len(_ENTRY_MID) : _ENTRY_RAW]
            == _ENTRY_MID and data.endswith(b"}")):  # fmt: skip
        return None
    raw = data[_ENTRY_RAW:-1]
    if (
        blake3.blake3(raw).hexdigest().encode()
        != data[len(_ENTRY_HEAD) : _ENTRY_RAW - len(_ENTRY_MID)]
    ):
        return None
    try:
        return orjson.loads(raw)
    except ValueError:
        return None


def template_digests(template: Any) -> Iterator[str]:
    """Digests referenced by a run's output template (``{"$digest": ...}`` leaves)."""
    if isinstance(template, dict):
        d = template.get("$digest")
        if isinstance(d, str) and len(template) == 1:
            yield d
            return
        for v in template.values():
            yield from template_digests(v)
    elif isinstance(template, list):
        for v in template:
            yield from template_digests(v)
