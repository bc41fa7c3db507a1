"""The on-disk formats of a store: object files, cache-entry files, run-record references.

Object file (little-endian)::

    "MKOB" | u16 format version (2 or 3) | u16 len(name) | u64 len(payload)
    | 32 B BLAKE3(payload) | u16 len(address) | [format 3: u16 len(signature)]
    | serializer name (ASCII) | address (ASCII) | [format 3: signature block]
    | u32 CRC-32 of everything before it | payload

Format 3 carries a signature block (``mlflowkit.trust.signing``: the writer's public key and
its Ed25519 signature over the address, the serializer name and the payload's BLAKE3). Objects
whose serializer can run code (pickle, plugins) are written in format 3; safe formats (npy,
Parquet, Arrow IPC, JSON, tree) in format 2, unsigned: their content digest is their proof.

The *address* is the digest the object is stored under (its file name): the header binds the
object to its own name, so a file copied or renamed over another object's is found out on
read by comparing one string, without hashing the value again. Format 1 (written by earlier
versions) has no ``u16 len(address)`` and no address; it is still read (see ``parse_header``).

Cache-entry file (valid JSON, written byte for byte in this shape)::

    {"checksum":"<64 hex: BLAKE3 of the entry's JSON bytes>","entry":<CacheEntry JSON>}

A *signed* cache-entry (or cache-pack) file puts the writer's signature block (192 hex
characters; it signs ``document_message("cache"|"pack", BLAKE3 of the JSON)``) first::

    {"signed":"<192 hex>","checksum":"<64 hex>","entry":<CacheEntry JSON>}

Cache-pack file (the cache entries one pipeline's last run used, read in one go), the same
shape with a list of ``[key, output_digest, stored, meta]`` (what a cache hit needs)::

    {"checksum":"<64 hex: BLAKE3 of the list JSON>","entry":[["<key>","<digest>",true,{}],...]}

A finished run record is its JSON object with one more member at the end, the writer's
signature block over ``document_message("run", BLAKE3 of the JSON without it)``::

    {...record...,"signature":"<192 hex>"}

Segment file (small objects and cache entries a run wrote, group-committed in one file; the
records are the bytes an object file or an unsigned cache-entry file would hold)::

    "MKSG" | u32 len(TOC) | TOC | record bytes...

The TOC is a sealed (and signed) document like a pack, over the JSON list
``[[kind, name, offset, length, "<64 hex: BLAKE3 of the record>"], ...]`` (kind ``"o"`` for an
object, ``"c"`` for a cache entry; offsets count from the end of the TOC). A record is used only
after the TOC's checksum and signature and then the record's own BLAKE3 match.

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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import blake3
import orjson

from mlflowkit.errors import StoreError
from mlflowkit.records import NO_META, CacheEntry

__all__ = [
    "ADDRESS_MAX",
    "HEAD_MAX",
    "SEGMENT_ENTRY",
    "SEGMENT_OBJECT",
    "CorruptFile",
    "SegmentRecord",
    "Sign",
    "decode_entry",
    "decode_entry_signed",
    "decode_pack",
    "decode_pack_signed",
    "decode_segment",
    "decode_segment_toc",
    "encode_entry",
    "encode_pack",
    "encode_segment",
    "pack_header",
    "parse_header",
    "payload_blake3",
    "seal_document",
    "segment_toc",
    "segment_toc_size",
    "sign_run",
    "sign_run_parts",
    "template_digests",
    "unseal_document",
    "unsign_run",
]

_MAGIC = b"MKOB"
_FORMAT = 2
_FORMAT_SIGNED = 3  # a signature block after the address
_FORMAT_UNBOUND = 1  # earlier versions: no address in the header
_FIXED = struct.Struct("<4sHHQ32s")
_ADDRESS_LEN = struct.Struct("<H")
_CRC = struct.Struct("<I")
ADDRESS_MAX = 200  # the longest name a store accepts for an object
_SIG_MAX = 96
HEAD_MAX = _FIXED.size + 2 * _ADDRESS_LEN.size + 64 + ADDRESS_MAX + _SIG_MAX + _CRC.size
_ENTRY_HEAD = b'{"checksum":"'
_SIGNED_HEAD = b'{"signed":"'
_SIGNED_RAW = len(_SIGNED_HEAD) + 2 * _SIG_MAX + 2  # then '","checksum":"...' as unsigned
_ENTRY_MID = b'","entry":'
_ENTRY_RAW = len(_ENTRY_HEAD) + 64 + len(_ENTRY_MID)
_PARALLEL_HASH_BYTES = 4 << 20


class CorruptFile(Exception):
    """An object file does not pass its integrity checks (the reason is the message)."""


def payload_blake3(data: bytes | bytearray | memoryview) -> bytes:
    """The 32-byte BLAKE3 of a payload (multi-threaded for large ones)."""
    threads = blake3.blake3.AUTO if len(data) >= _PARALLEL_HASH_BYTES else 1
    return bytes(blake3.blake3(data, max_threads=threads).digest())


def pack_header(
    name: str,
    payload: bytes,
    address: str,
    *,
    signature: bytes = b"",
    checksum: bytes | None = None,
) -> bytes:
    """The header to write before ``payload`` serialized with ``name``, stored as ``address``.

    With a ``signature`` block the header is format 3; ``checksum`` is the payload's BLAKE3
    when the caller has it already.
    """
    raw = name.encode("ascii")
    where = address.encode("ascii")
    if checksum is None:
        checksum = payload_blake3(payload)
    version = _FORMAT_SIGNED if signature else _FORMAT
    head = b"".join(
        (
            _FIXED.pack(_MAGIC, version, len(raw), len(payload), checksum),
            _ADDRESS_LEN.pack(len(where)),
            _ADDRESS_LEN.pack(len(signature)) if signature else b"",
            raw,
            where,
            signature,
        )
    )
    return head + _CRC.pack(zlib.crc32(head))


def parse_header(buf: bytes) -> tuple[str, int, bytes, int, str | None, bytes | None]:
    """``(serializer, payload length, payload BLAKE3, header length, address, signature)``.

    ``address`` is None for a format-1 object (written before headers named their address);
    ``signature`` is None for an unsigned (format 1 or 2) object.

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
    address_len = sig_len = 0
    if version in (_FORMAT, _FORMAT_SIGNED):
        if len(buf) < start + _ADDRESS_LEN.size:
            raise CorruptFile("truncated header")
        (address_len,) = _ADDRESS_LEN.unpack_from(buf, start)
        start += _ADDRESS_LEN.size
    if version == _FORMAT_SIGNED:
        if len(buf) < start + _ADDRESS_LEN.size:
            raise CorruptFile("truncated header")
        (sig_len,) = _ADDRESS_LEN.unpack_from(buf, start)
        start += _ADDRESS_LEN.size
    end = start + name_len + address_len + sig_len
    if len(buf) < end + _CRC.size:
        raise CorruptFile("truncated header")
    (crc,) = _CRC.unpack_from(buf, end)
    if crc != zlib.crc32(buf[:end]):
        raise CorruptFile("header checksum mismatch")
    if version not in (_FORMAT, _FORMAT_SIGNED, _FORMAT_UNBOUND):
        raise CorruptFile(f"unknown object format version {version}")
    where = start + name_len
    try:
        name = buf[start:where].decode("ascii")
        address = (
            buf[where : where + address_len].decode("ascii") if version != _FORMAT_UNBOUND else None
        )
    except UnicodeDecodeError:
        raise CorruptFile("header names are not ASCII") from None
    signature = bytes(buf[where + address_len : end]) if version == _FORMAT_SIGNED else None
    return name, payload_len, checksum, end + _CRC.size, address, signature


#: Signs a sealed document: the BLAKE3 digest (32 bytes) of its JSON -> a signature block.
Sign = Callable[[bytes], bytes]


def encode_entry(entry: CacheEntry, sign: Sign | None = None) -> bytes:
    """The bytes of a cache-entry file (signed when ``sign`` is given).

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
    return _seal(raw, sign)


def decode_entry(data: bytes) -> CacheEntry | None:
    """The entry in a cache-entry file, or None when the file is damaged in any way.

    The signature (if any) is not checked here: see ``decode_entry_signed``.
    """
    return decode_entry_signed(data)[0]


def decode_entry_signed(data: bytes) -> tuple[CacheEntry | None, bytes | None, bytes]:
    """``(entry or None, signature block or None, BLAKE3 of the entry JSON)``."""
    fields, block, digest = _unseal_signed(data)
    if not isinstance(fields, dict):
        return None, block, digest
    try:
        return CacheEntry.from_dict(fields), block, digest
    except TypeError:
        return None, block, digest


def encode_pack(entries: list[CacheEntry], sign: Sign | None = None) -> bytes:
    """The bytes of a cache-pack file holding ``entries`` (signed when ``sign`` is given).

    Raises
    ------
    StoreError
        An entry holds something JSON cannot write (see ``encode_entry``).
    """
    try:
        raw = orjson.dumps([(e.key, e.output_digest, e.stored, e.meta) for e in entries])
    except (TypeError, ValueError) as exc:
        raise StoreError(f"a cache pack entry is not JSON-able ({exc})") from exc
    return _seal(raw, sign)


def decode_pack(data: bytes) -> dict[str, CacheEntry] | None:
    """The entries of a cache-pack file by key, or None when the file is damaged in any way.

    The signature (if any) is not checked here: see ``decode_pack_signed``.
    """
    return decode_pack_signed(data)[0]


def decode_pack_signed(data: bytes) -> tuple[dict[str, CacheEntry] | None, bytes | None, bytes]:
    """``(entries by key or None, signature block or None, BLAKE3 of the list JSON)``."""
    items, block, digest = _unseal_signed(data)
    if not isinstance(items, list):
        return None, block, digest
    out = {}
    # taken from the end, each row is freed once its entry is made (not held until the last
    # is); an entry without meta (most) shares NO_META instead of keeping an empty dict
    items.reverse()
    pop = items.pop
    while items:
        item = pop()
        if not (isinstance(item, list) and len(item) == 4):
            return None, block, digest
        key, digest_, stored, meta = item
        if not (type(key) is str and type(digest_) is str and type(stored) is bool
                and type(meta) is dict):  # fmt: skip
            return None, block, digest
        # positional: ~2x faster
        out[key] = CacheEntry(key, digest_, "", stored, None, meta if meta else NO_META)
    return out, block, digest


_SEGMENT_MAGIC = b"MKSG"
_SEGMENT_LEN = struct.Struct("<I")
#: what a segment record is: an object (its object-file bytes) or a cache entry
SEGMENT_OBJECT = "o"
SEGMENT_ENTRY = "c"


#: a segment record as its TOC lists it: kind, name, offset, length, BLAKE3 (hex)
SegmentRecord = tuple[str, str, int, int, str]


def segment_toc(records: list[tuple[str, str, bytes]]) -> list[SegmentRecord]:
    """The TOC of a segment holding ``records`` (``(kind, name, bytes)``), in their order."""
    toc: list[SegmentRecord] = []
    offset = 0
    for kind, name, data in records:
        toc.append((kind, name, offset, len(data), blake3.blake3(data).hexdigest()))
        offset += len(data)
    return toc


def encode_segment(
    records: list[tuple[str, str, bytes]],
    sign: Sign | None = None,
    toc: list[SegmentRecord] | None = None,
) -> bytes:
    """The bytes of a segment file holding ``records`` (``(kind, name, bytes)``); ``toc``:
    their ``segment_toc`` when the caller has it already."""
    if toc is None:
        toc = segment_toc(records)
    sealed = _seal(orjson.dumps(toc), sign)
    return b"".join(
        (_SEGMENT_MAGIC, _SEGMENT_LEN.pack(len(sealed)), sealed, *(r[2] for r in records))
    )


def segment_toc_size(head: bytes) -> int | None:
    """How many bytes of a segment file hold its TOC, from its first 8 bytes (None: damaged)."""
    if len(head) < 8 or not head.startswith(_SEGMENT_MAGIC):
        return None
    return 8 + int(_SEGMENT_LEN.unpack_from(head, 4)[0])


def decode_segment(
    data: bytes,
) -> tuple[list[SegmentRecord] | None, int, bytes | None, bytes]:
    """``(TOC or None when damaged, where the records start, signature block, BLAKE3 of the
    TOC JSON)`` of a whole segment file (or at least its first ``segment_toc_size`` bytes)."""
    size = segment_toc_size(data[:8])
    if size is None:
        return None, 0, None, b""
    toc, block, digest = decode_segment_toc(data[:size])
    return toc, size, block, digest


def decode_segment_toc(
    head: bytes,
) -> tuple[list[SegmentRecord] | None, bytes | None, bytes]:
    """``(records or None when damaged, signature block, BLAKE3 of the TOC JSON)``.

    ``head`` is at least the first ``segment_toc_size`` bytes of the file; a record's offset
    counts from the end of the TOC (``segment_toc_size``).
    """
    size = segment_toc_size(head)
    if size is None or len(head) < size:
        return None, None, b""
    items, block, digest = _unseal_signed(head[8:size])
    if not isinstance(items, list):
        return None, block, digest
    out = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 5):
            return None, block, digest
        kind, name, offset, length, checksum = item
        if not (kind in (SEGMENT_OBJECT, SEGMENT_ENTRY) and type(name) is str
                and type(offset) is int and type(length) is int and type(checksum) is str
                and offset >= 0 and length >= 0):  # fmt: skip
            return None, block, digest
        out.append((kind, name, offset, length, checksum))
    return out, block, digest


def seal_document(raw: bytes, sign: Sign | None = None) -> bytes:
    """A JSON document sealed by its BLAKE3 (and signed when ``sign`` is given)."""
    return _seal(raw, sign)


def unseal_document(data: bytes) -> tuple[Any, bytes | None, bytes]:
    """``(JSON value or None, signature block or None, BLAKE3 of the JSON bytes)``."""
    return _unseal_signed(data)


def _seal(raw: bytes, sign: Sign | None = None) -> bytes:
    digest = blake3.blake3(raw).digest()
    body = (_ENTRY_HEAD, digest.hex().encode(), _ENTRY_MID, raw, b"}")
    if sign is None:
        return b"".join(body)
    unsigned = b"".join(body)
    return b"".join((_SIGNED_HEAD, sign(digest).hex().encode(), b'",', unsigned[1:]))


def _unseal_signed(data: bytes) -> tuple[Any, bytes | None, bytes]:
    """The JSON value sealed in ``data`` (None when damaged), its signature block, BLAKE3.

    Nothing of ``data`` is copied: the JSON is hashed and parsed where it lies in ``data``.
    """
    block = None
    start = 0  # where the unsigned document begins (its first byte stands for its "{")
    if data.startswith(_SIGNED_HEAD):
        hex_block = data[len(_SIGNED_HEAD) : len(_SIGNED_HEAD) + 2 * _SIG_MAX]
        if data[len(_SIGNED_HEAD) + 2 * _SIG_MAX : _SIGNED_RAW] != b'",':
            return None, None, b""
        try:
            block = bytes.fromhex(hex_block.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None, None, b""
        start = _SIGNED_RAW - 1  # the "," before '"checksum":'
    elif not data.startswith(b"{"):
        return None, None, b""
    value, digest = _unseal(data, start)
    return value, block, digest


def _unseal(data: bytes, start: int) -> tuple[Any, bytes]:
    """The JSON value sealed in ``data[start:]`` (its first byte standing for the ``{``) and
    its BLAKE3; None when checksum or framing is wrong."""
    head = start + len(_ENTRY_HEAD)
    raw = start + _ENTRY_RAW
    framed = (
        data[start + 1 : head] == _ENTRY_HEAD[1:]
        and data[raw - len(_ENTRY_MID) : raw] == _ENTRY_MID
        and data.endswith(b"}")
    )
    if not framed:
        return None, b""
    view = memoryview(data)[raw:-1]
    digest = blake3.blake3(view).digest()
    if digest.hex().encode() != data[head : raw - len(_ENTRY_MID)]:
        return None, b""
    try:
        return orjson.loads(view), digest
    except ValueError:
        return None, b""


_RUN_SIG_HEAD = b',"signature":"'
_RUN_SIG_LEN = len(_RUN_SIG_HEAD) + 2 * _SIG_MAX + 2  # then '"}'


def sign_run(data: bytes, sign: Sign) -> bytes:
    """A run record's JSON bytes with the writer's signature added (see the module docs)."""
    return b"".join(sign_run_parts((data,), sign))


def sign_run_parts(parts: Iterable[bytes | memoryview], sign: Sign) -> Iterator[bytes | memoryview]:
    """``sign_run`` of the joined ``parts`` (a run record's JSON), in pieces.

    The parts are passed on as they are, hashed as they go by (a running BLAKE3); the last
    one is held back until the digest is known, then given with its closing ``}`` replaced by
    the signature member. Nothing but the last part is copied.

    Raises
    ------
    ValueError
        The joined parts do not end in ``}`` (not a JSON object).
    """
    hasher = blake3.blake3()
    last: bytes | memoryview | None = None
    for part in parts:
        if last is not None:
            yield last
        hasher.update(part)
        last = part
    if last is None or bytes(last[-1:]) != b"}":
        raise ValueError("a run record's JSON must end with '}' to be signed")
    block = sign(hasher.digest())
    yield b"".join((last[:-1], _RUN_SIG_HEAD, block.hex().encode(), b'"}'))


def unsign_run(data: bytes) -> tuple[bytes, bytes | None, bytes]:
    """``(record JSON without the signature, signature block or None, its BLAKE3)``."""
    tail = data[-_RUN_SIG_LEN:]
    if len(data) > _RUN_SIG_LEN and tail.startswith(_RUN_SIG_HEAD) and tail.endswith(b'"}'):
        body = data[:-_RUN_SIG_LEN] + b"}"
        try:
            block: bytes | None = bytes.fromhex(tail[len(_RUN_SIG_HEAD) : -2].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            block = None
        return body, block, blake3.blake3(body).digest()
    return data, None, blake3.blake3(data).digest()


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
