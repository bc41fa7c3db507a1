"""What a signature covers, and how it is written down.

A *signature block* is 96 bytes: the signer's raw Ed25519 public key (32) then the signature
(64). It proves its own key id (``keys.key_id_of(public)``); whether that key is allowed is the
caller's question.

Signed messages are domain-separated (a signature made for one kind of record never verifies
as another) and cover digests, never whole payloads:

* an object: ``b"mlflowkit/object/1\\0" address \\0 serializer \\0 BLAKE3(payload)``: the
  name it is stored under, the serializer a reader will use, and (through the digest) every
  payload byte;
* a document (cache entry, pack, policy, audit entry): ``b"mlflowkit/<kind>/1\\0"
  BLAKE3(document bytes)``.

Invariants:

* ``signer_of`` returns a key id only for a block whose signature verifies over exactly the
  message given; anything else (short, garbled, another message) gives None.
"""

from __future__ import annotations

from mlflowkit.trust.keys import Signer, key_id_of, verify_signature

__all__ = [
    "SIG_LEN",
    "document_message",
    "object_message",
    "sign",
    "signer_of",
]

SIG_LEN = 96


def object_message(address: str, serializer: str, payload_blake3: bytes) -> bytes:
    """The message an object's signature covers."""
    return b"".join(
        (
            b"mlflowkit/object/1\0",
            address.encode("ascii"),
            b"\0",
            serializer.encode("ascii"),
            b"\0",
            payload_blake3,
        )
    )


def document_message(kind: str, digest: bytes) -> bytes:
    """The message a signed document of ``kind`` with BLAKE3 ``digest`` is signed over."""
    return b"mlflowkit/" + kind.encode("ascii") + b"/1\0" + digest


def sign(signer: Signer, message: bytes) -> bytes:
    """The 96-byte signature block of ``message`` by ``signer``."""
    return signer.public + signer.sign(message)


def signer_of(block: bytes | None, message: bytes) -> str | None:
    """The key id that signed ``message`` in ``block``, or None when it does not verify."""
    if block is None or len(block) != SIG_LEN:
        return None
    public, signature = block[:32], block[32:]
    if not verify_signature(public, signature, message):
        return None
    return key_id_of(public)
