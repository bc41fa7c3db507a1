"""Cache keys: what a step call's result depends on, as one digest.

Invariants
----------
* ``key = H(version tag, step identity, code digest or version, input digests, packages)``:
  input digests are *content* digests of the values passed (early cutoff), never of how they
  were produced; execution hints are never part of it; the display name is not either (two
  calls of one step with equal inputs share a key).
* Code digests and package versions are computed once per step per ``KeyMaker`` (one per run),
  so a run sees one consistent view of the code even if a module changes while it runs.
"""

from __future__ import annotations

import operator
import struct
from typing import TYPE_CHECKING, Any

from blake3 import blake3

from mlflowkit.errors import HashingError
from mlflowkit.executors.base import Input
from mlflowkit.hashing import CodeDigester, hash_value
from mlflowkit.hashing.values import EncodeState, encode, register_encoder
from mlflowkit.placeholders import SCALARS, all_of_type, leaves, map_leaves
from mlflowkit.plan import find_refs

if TYPE_CHECKING:
    from mlflowkit.plan import Node
    from mlflowkit.step import Step

__all__ = ["KEY_VERSION", "CallKeys", "KeyMaker", "Upstream"]

KEY_VERSION = "mlflowkit-key/1"


class Upstream:
    """Stands for an upstream value inside a template while hashing it: hashes as its digest."""

    __slots__ = ("digest",)

    def __init__(self, digest: str) -> None:
        self.digest = digest

    def __mlflowkit_hash__(self) -> tuple[str, str]:
        return ("mlflowkit.upstream", self.digest)


# A gather of a 1000-wide fan-out hashes 1000 Upstreams: encode each directly, with the bytes
# the general ``__mlflowkit_hash__`` path gives (its head computed by that path, once).
_UPSTREAM_HEAD = encode(Upstream(""))[: -len(encode(""))]


def _encode_upstream(st: EncodeState, x: Upstream) -> None:
    st.out += _UPSTREAM_HEAD
    st.out += encode(x.digest)


register_encoder(Upstream, _encode_upstream, subclasses=False)


def _flat_upstream_digest(template: tuple[Input, ...] | list[Input]) -> str:
    """``hash_value`` of a tuple or list of upstream values (a gather), encoded in one pass.

    The bytes are those of the general path: the sequence head, then each ``Upstream``.
    """
    digests = list(map(_DIGEST, template))
    opener = (b"(" if type(template) is tuple else b"[") + _LENGTH(len(template))
    if digests and set(map(len, digests)) == {64} and all(map(str.isascii, digests)):
        # hex digests: every item is the same separator (head, string tag, length) + digest;
        # hashed a slice at a time, so that a wide gather never holds all its bytes at once
        hasher = blake3(opener)
        for start in range(0, len(digests), _SLICE):
            hasher.update(_SEP64 + _SEP64.join(map(str.encode, digests[start : start + _SLICE])))
        return hasher.digest().hex()
    head = _UPSTREAM_HEAD
    parts = b"".join([head + encode(d) for d in digests])
    return blake3(opener + parts).digest().hex()


_LENGTH = struct.Struct("<Q").pack
_SEP64 = _UPSTREAM_HEAD + encode("0" * 64)[:-64]
_DIGEST = operator.attrgetter("digest")
#: digests of a gather hashed per slice (about 100 KB of bytes)
_SLICE = 1024


class KeyMaker:
    """Computes step identities, code digests and keys, memoized for one run."""

    def __init__(self) -> None:
        self._code: dict[int, tuple[Step[Any, Any], str, dict[str, str]]] = {}
        # per step: the parts of the key text before and after the inputs
        self._frame: dict[int, tuple[Step[Any, Any], Any, str, str, dict[str, str]]] = {}
        self._digester: CodeDigester | None = None

    def code(self, step: Step[Any, Any]) -> tuple[str, dict[str, str]]:
        """The step's code digest (or ``version:...``) and the package versions it uses."""
        memo = self._code.get(id(step))
        if memo is not None and memo[0] is step:
            return memo[1], memo[2]
        if step.identity.version is not None:
            code, packages = f"version:{step.identity.version}", {}
        else:  # one digester per run: code shared by several steps is analyzed once
            if self._digester is None:
                self._digester = CodeDigester()
            code, packages = self._digester.digest(step.fn), self._digester.packages(step.fn)
        self._code[id(step)] = (step, code, packages)
        return code, packages

    @staticmethod
    def input_digest(template: Any) -> str:
        """Content digest of one argument: the upstream digest, or the hash of the value."""
        if type(template) in SCALARS:
            return hash_value(template)
        if isinstance(template, Input):
            return template.digest
        kind = type(template)
        if (kind is tuple or kind is list) and all_of_type(template, Input):
            return _flat_upstream_digest(template) if template else hash_value(template)
        if leaves(template, Input):
            return hash_value(map_leaves(template, Input, lambda item: Upstream(item.digest)))
        return hash_value(template)

    def key(self, step: Step[Any, Any], inputs: dict[str, str]) -> str:
        """The cache key of a call of ``step`` with these input digests.

        Every field is a name, a hex digest or a version string (none contains a newline or
        a tab), so joining them with those separators, parameters and packages sorted, is an
        unambiguous encoding, and much cheaper than the general value encoding.
        """
        return self.key_and_code(step, inputs)[0]

    def key_and_code(
        self, step: Step[Any, Any], inputs: dict[str, str]
    ) -> tuple[str, str, dict[str, str]]:
        """``key(step, inputs)`` with ``code(step)`` (code digest, packages), in one call."""
        memo = self._frame.get(id(step))
        if memo is None or memo[0] is not step:
            code, packages = self.code(step)
            head = f"{KEY_VERSION}\n{step.qualified_name}\n{code}\n"
            tail = "\n".join(["packages", *(f"{d}\t{v}" for d, v in sorted(packages.items()))])
            # the head is hashed once per step; each key continues from a copy of that state
            memo = self._frame[id(step)] = (step, blake3(head.encode()), tail, code, packages)
        if len(inputs) == 1:
            ((name, digest),) = inputs.items()
            text = f"{name}\t{digest}\n{memo[2]}"
        else:
            middle = "".join(f"{name}\t{digest}\n" for name, digest in sorted(inputs.items()))
            text = f"{middle}{memo[2]}"
        hasher = memo[1].copy()
        hasher.update(text.encode())
        return hasher.digest().hex(), memo[3], memo[4]


class CallKeys:
    """The keys of one walk's step calls (``scheduler``): the key maker, the digests of
    constant arguments (computed once per call and parameter), and the packages the steps
    import."""

    __slots__ = ("maker", "memo", "packages")

    def __init__(self, maker: KeyMaker) -> None:
        self.maker = maker
        self.memo: dict[tuple[str, str], str] = {}
        self.packages: dict[str, str] = {}

    def of(
        self, name: str, node: Node, args: dict[str, Any]
    ) -> tuple[dict[str, str], str, str, bool]:
        """Input digests, cache key and code digest of one step call, and whether an argument
        is a structure (which may hold upstream values)."""
        step = node.step
        inputs: dict[str, str] = {}
        nested = False
        for pname, template in args.items():
            if type(template) is Input:
                inputs[pname] = template.digest
            elif type(template) in SCALARS:  # cheap to hash: no memo
                inputs[pname] = hash_value(template)
            else:
                nested = True
                memo = (name, pname)
                digest = self.memo.get(memo)
                if digest is None:
                    try:
                        digest = self.maker.input_digest(template)
                    except HashingError as exc:  # say which step call and parameter
                        raise HashingError(
                            f"Step {name!r}, parameter {pname!r} (at {node.location}): {exc}",
                            type_name=exc.type_name,
                        ) from exc
                    if not node.deps or not find_refs(node.args[pname]):
                        self.memo[memo] = digest
                inputs[pname] = digest
        key, code, packages = self.maker.key_and_code(step, inputs)
        if packages:
            self.packages.update(packages)
        node.key = key
        return inputs, key, code, nested
