"""The store's side of governance: who signs its writes, whom its reads trust.

A ``Guard`` belongs to one store object and sees only its files (the objects seam). It loads
the process's signing key on first need, reads the store's owner from its marker file, its
policy from ``policy/`` and its audit trail from ``audit/``; the judging itself is done by
:mod:`mlflowkit.trust` (pure functions).

Layout it uses::

    mlflowkit-store.json   the marker: "owner" (key id) and "owner_sig" (the owner's signature)
    policy/<n>.json        policy version n (signed sealed document, kind "policy")
    audit/<n>.json         audit entry n (signed sealed document, kind "audit")

Invariants:

* Objects whose serializer is not in ``SAFE_SERIALIZERS`` are signed when written and, when
  read, deserialized only after ``check_object`` found a valid signature by an allowed key.
* Cache entries and packs are signed when written; one that is unsigned, badly signed or
  signed by a key that may not write reads as missing.
* "Allowed to write" is ``writer`` (or any role holding it) under the policy in force; with
  no policy, the store's owner and the reader's own key. A store made before owners were
  recorded has no owner until it is adopted (``Store.adopt``).
* The first owner a user's process sees for a store URL is pinned in the keys folder
  (``known-stores/``); a marker that later names another owner is refused, so rewriting the
  marker does not hand the store to someone else.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3
import orjson

from mlflowkit.errors import AccessDenied, StoreError, UntrustedObjectError
from mlflowkit.store.formats import seal_document, unseal_document
from mlflowkit.store.layout import MARKER, STORE_FORMAT
from mlflowkit.store.objects import ObjectStore
from mlflowkit.trust import keys as _keys
from mlflowkit.trust import policy as _policy
from mlflowkit.trust import signing as _signing
from mlflowkit.version import __version__

if TYPE_CHECKING:
    from mlflowkit.trust.audit import AuditEntry
    from mlflowkit.trust.keys import Signer
    from mlflowkit.trust.policy import Grant, Policy

__all__ = ["SAFE_SERIALIZERS", "Guard"]

#: serializers whose loaders run no code of the payload's choosing: no signature needed
SAFE_SERIALIZERS = frozenset({"npy", "parquet", "arrow-ipc", "json", "tree"})
_POLICY_TTL_S = 2.0
_verified: dict[tuple[bytes, bytes], str | None] = {}  # (block, message) -> signer, this process
_verified_lock = threading.Lock()


def _signer_of(block: bytes | None, message: bytes) -> str | None:
    """The key id that signed ``message`` in ``block`` (None: it does not verify).

    A signature verified once is remembered, in this process and in the user's cache folder
    (``$MLFLOWKIT_CACHE_DIR/verified/``, an empty file named by the BLAKE3 of the block and
    the message): a fully cached run in a fresh process checks one ``stat`` per signature and
    never imports ``cryptography``. That folder is the user's own, trusted like the keys.
    """
    if block is None or len(block) != 96:
        return None
    memo = (block, message)
    found = _verified.get(memo, "")
    if found != "":
        return found

    mark = _verified_mark(block, message)
    if mark is not None and os.path.exists(mark):
        got: str | None = _keys.key_id_of(block[:32])
    else:
        got = _signing.signer_of(block, message)
        if got is not None and mark is not None:
            with contextlib.suppress(OSError):
                os.makedirs(os.path.dirname(mark), exist_ok=True)
                with open(mark, "wb"):
                    pass
    with _verified_lock:
        if len(_verified) > 100_000:
            _verified.clear()
        _verified[memo] = got
    return got


def _verified_mark(block: bytes, message: bytes) -> str | None:
    base = os.environ.get("MLFLOWKIT_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "mlflowkit"
    )
    name = blake3.blake3(b"mlflowkit/verified/1\0" + block + message).hexdigest()
    return os.path.join(base, "verified", name[:2], name)


class Guard:
    """Signing and trust decisions for one store (see the module docstring)."""

    def __init__(
        self,
        files: ObjectStore,
        url: str,
        ensure: Callable[[], None],
        key: str | os.PathLike[str] | None,
    ) -> None:
        self._files = files
        self._root = files.root
        self._url = url
        self._ensure = ensure  # lays the store out before its first write
        self._key_spec = key
        self._signer: Signer | None = None
        self._key_id: str | None = None
        self._owner: tuple[str | None] | None = None
        self._policy: tuple[float, list[Policy], list[str]] | None = None
        self._sign_fns: dict[str, Callable[[bytes], bytes]] = {}

    # the process's key ---------------------------------------------------------------------
    @property
    def signer(self) -> Signer:
        """The key this store's writes are signed with (loaded, or made, on first use)."""
        if self._signer is None:
            self._signer = _keys.load_signer(self._key_spec)
        return self._signer

    @property
    def key_id(self) -> str:
        """The id of the key this store's writes are signed with (no cryptography needed)."""
        if self._key_id is None:
            if self._signer is not None:
                self._key_id = self._signer.key_id
            else:
                self._key_id = _keys.load_key_id(self._key_spec)
        return self._key_id

    def sign_document(self, kind: str) -> Callable[[bytes], bytes]:
        """A ``sign(digest) -> block`` function for sealed documents of ``kind``."""
        fn = self._sign_fns.get(kind)
        if fn is None:
            signer = self.signer

            def fn(digest: bytes) -> bytes:
                return _signing.sign(signer, _signing.document_message(kind, digest))

            self._sign_fns[kind] = fn
        return fn

    def sign_object(self, address: str, serializer: str, checksum: bytes) -> bytes:

        return _signing.sign(self.signer, _signing.object_message(address, serializer, checksum))

    # the marker and the owner ---------------------------------------------------------------
    def marker_bytes(self) -> bytes:
        """The marker of a store made now: its owner is this process's key."""
        owner = self.key_id
        block = _signing.sign(
            self.signer, _signing.document_message("owner", blake3.blake3(owner.encode()).digest())
        )
        return orjson.dumps(
            {
                "mlflowkit": "store",
                "format": STORE_FORMAT,
                "created_by": __version__,
                "created_at": time.time(),
                "owner": owner,
                "owner_sig": block.hex(),
            }
        )

    def owner(self) -> str | None:
        """The store owner's key id (None: a store made before owners were recorded).

        Raises
        ------
        UntrustedObjectError
            The marker names an owner whose signature does not verify, or another owner than
            the one this user saw first for this store.
        """
        if self._owner is not None:
            return self._owner[0]
        data = self._files.read(f"{self._root}/{MARKER}")
        owner = None
        try:
            doc = orjson.loads(data) if data else {}
        except ValueError:
            doc = {}
        claimed = doc.get("owner") if isinstance(doc, dict) else None
        if isinstance(claimed, str):
            try:
                block = bytes.fromhex(str(doc.get("owner_sig", "")))
            except ValueError:
                block = b""
            message = _signing.document_message("owner", blake3.blake3(claimed.encode()).digest())
            pinned = self._pinned()
            if pinned != claimed and _signer_of(block, message) != claimed:
                raise UntrustedObjectError(
                    f"the marker of store {self._url} names owner {claimed} without a valid "
                    f"signature of that key: someone edited {MARKER}. Restore it from a backup.",
                    url=self._url,
                    signer=claimed,
                )
            owner = claimed
            if pinned != owner:
                self._pin(owner, pinned)
        self._owner = (owner,)
        return owner

    def _pin_path(self) -> Path:

        name = blake3.blake3(self._url.encode()).hexdigest()[:32] + ".json"
        return _keys.keys_dir() / "known-stores" / name

    def _pinned(self) -> str | None:
        """The owner this user saw first for this store (None: never opened here)."""
        try:
            seen = orjson.loads(self._pin_path().read_bytes()).get("owner")
        except (OSError, ValueError, AttributeError):
            return None
        return seen if isinstance(seen, str) else None

    def _pin(self, owner: str, seen: str | None) -> None:
        """Remember the first owner seen for this store; refuse another one later."""
        path = self._pin_path()
        folder = path.parent
        if seen is None:
            with contextlib.suppress(OSError):
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".{path.name}.{os.getpid()}"
                tmp.write_bytes(orjson.dumps({"url": self._url, "owner": owner}))
                os.replace(tmp, path)
        if seen is not None and seen != owner:
            raise UntrustedObjectError(
                f"store {self._url} now names owner {owner}, but this user first saw it owned by "
                f"{seen}: its marker was replaced. If the store really changed hands, delete "
                f"{path} and open it again.",
                url=self._url,
                signer=owner,
            )

    def forget_owner(self) -> None:
        self._owner = None
        self._policy = None

    # the policy -----------------------------------------------------------------------------
    def _documents(self, area: str, kind: str) -> list[tuple[int, Any, str | None, bytes]]:
        """``(number, JSON value or None, signer or None, BLAKE3)`` of each file in ``area``."""
        out = []
        for f in self._files.listdir(f"{self._root}/{area}"):
            stem, dot, ext = f.name.partition(".")
            if ext != "json" or not dot or not stem.isdigit() or len(stem) > 12:
                continue
            data = self._files.read(f"{self._root}/{area}/{f.name}") or b""
            value, block, digest = unseal_document(data)
            signer = (
                _signer_of(block, _signing.document_message(kind, digest))
                if value is not None
                else None
            )
            out.append((int(stem), value, signer, digest))
        return out

    def policy_state(self, fresh: bool = False) -> tuple[Policy, list[str]]:
        """The policy in force and the problems of the policy chain."""
        history, problems = self.policy_history(fresh)
        return history[-1], problems

    def policy_history(self, fresh: bool = False) -> tuple[list[Policy], list[str]]:
        """Every valid policy version (the implicit version 0 first) and the chain's problems.

        ``history[n]`` is version ``n``: the chain is contiguous.
        """
        cached = self._policy
        if cached is not None and not fresh and time.monotonic() - cached[0] < _POLICY_TTL_S:
            return cached[1], cached[2]

        history, problems = _policy.resolve_history(
            self._documents("policy", "policy"), self.owner()
        )
        self._policy = (time.monotonic(), history, problems)
        return history, problems

    def unowned(self) -> bool:
        """Whether the store has neither an owner nor a policy (made by an earlier version and
        not adopted): then anyone may write, and unsigned records are accepted."""
        return self.owner() is None and self.policy_state()[0].version == 0

    def document_signer(self, kind: str, digest: bytes, block: bytes | None) -> str | None:
        """The key id that signed a sealed document of ``kind`` (None: it does not verify)."""
        return _signer_of(block, _signing.document_message(kind, digest))

    def check_write(self, role: str = "writer", namespace: str = "*") -> None:
        """Raise ``AccessDenied`` unless this process's key holds ``role`` here.

        ``namespace="*"``: in some namespace; ``""``: the default namespace of artifact names
        without one (covered only by grants for every namespace).

        A store without a recorded owner (made by an earlier version, not adopted) and
        without a policy lets anyone write, as it always did.
        """
        policy, _ = self.policy_state()
        me = self.key_id
        if policy.version == 0 and self.owner() is None:
            return
        if policy.holds(me, role, namespace):
            return
        where = "the default namespace" if namespace == "" else f"namespace {namespace!r}"
        raise AccessDenied(
            f"key {me} lacks the {role} role in {where} of store {self._url}; "
            f"ask an admin of the store to run `mlflowkit policy grant {role} {me}"
            + ("" if namespace in ("*", "") else f" --namespace {namespace}")
            + f" --store {self._url}`, or sign with a key that holds it ($MLFLOWKIT_KEY)",
            role=role,
            namespace=namespace,
            key_id=me,
        )

    def set_policy(self, grants: tuple[Grant, ...]) -> Policy:
        """Write the next policy version with ``grants``, signed by this process's key.

        Raises
        ------
        AccessDenied
            This key is not admin under the policy in force.
        """
        self._ensure()
        if self.owner() is None:
            raise StoreError(
                f"store {self._url} has no recorded owner (made by an earlier version); adopt it "
                "first with `mlflowkit store adopt`",
                url=self._url,
            )
        current, _ = self.policy_state(fresh=True)
        self.check_write("admin")
        nxt, raw = current.changed(grants, self.key_id)
        data = seal_document(raw, self.sign_document("policy"))
        path = f"{self._root}/policy/{nxt.version:08d}.json"
        if not self._files.create_exclusive(path, data):
            raise StoreError(
                f"policy version {nxt.version} of store {self._url} was written by someone else "
                "meanwhile; run the command again",
                url=self._url,
            )
        self._policy = None
        self.append_audit("policy", "policy", {"version": nxt.version, "grants": len(grants)})
        return nxt

    # the audit trail ------------------------------------------------------------------------
    def audit_state(self) -> tuple[list[AuditEntry], list[str]]:
        """The audit entries and the problems of the chain."""
        from mlflowkit.trust import audit as _audit  # governance only: not on a run's path

        owner = self.owner()
        history, _ = _policy.resolve_history(self._documents("policy", "policy"), owner)

        def may(key: str, role: str) -> bool:
            # history stays history: an entry counts when its key held the role in some valid
            # policy version (so revoking a key does not make its past entries "forged")
            return owner is None or any(p.holds(key, role) for p in history)

        return _audit.check_chain(self._documents("audit", "audit"), may)

    def append_audit(self, action: str, target: str, detail: dict[str, Any]) -> None:
        """Append one signed entry to the audit trail (exclusive create; retried on a race)."""
        from mlflowkit.trust import audit as _audit

        self._ensure()
        sign = self.sign_document("audit")
        for _ in range(100):
            files = self._documents("audit", "audit")
            last = max(files, key=lambda f: f[0]) if files else None
            seq = 1 if last is None else last[0] + 1
            prev = None if last is None else last[3].hex() or None
            raw = _audit.new_entry(seq, prev, self.key_id, action, target, detail)
            if self._files.create_exclusive(
                f"{self._root}/audit/{seq:012d}.json", seal_document(raw, sign)
            ):
                return
        raise StoreError(f"could not append to the audit trail of {self._url}", url=self._url)

    # reading --------------------------------------------------------------------------------
    def object_signer(
        self, digest: str, serializer: str, checksum: bytes, block: bytes | None
    ) -> str | None:

        return _signer_of(block, _signing.object_message(digest, serializer, checksum))

    def check_object(
        self, digest: str, serializer: str, checksum: bytes, block: bytes | None
    ) -> None:
        """Raise ``UntrustedObjectError`` unless the object may be deserialized."""
        if serializer in SAFE_SERIALIZERS:
            return
        reason = self.object_problem(digest, serializer, checksum, block)
        if reason is not None:
            raise UntrustedObjectError(
                f"object {digest} in store {self._url} is refused before deserializing it: "
                f"{reason}. Its serializer ({serializer}) can run code, so only a key allowed "
                "to write to this store may sign it. If you trust its content (a store made "
                "by an earlier version), adopt it with `mlflowkit store adopt`; else delete it "
                "and run the pipeline again.",
                digest=digest,
                url=self._url,
                signer=self.object_signer(digest, serializer, checksum, block),
            )

    def object_problem(
        self, digest: str, serializer: str, checksum: bytes, block: bytes | None
    ) -> str | None:
        """Why an object may not be deserialized (None: it may)."""
        if serializer in SAFE_SERIALIZERS:
            return None
        if block is None:
            return "it is not signed"
        signer = self.object_signer(digest, serializer, checksum, block)
        if signer is None:
            return "its signature is invalid (the object or its header was changed)"
        if not self.trusts(signer):
            return f"it is signed by {signer}, a key that may not write to this store"
        return None

    def trusts(self, signer: str | None) -> bool:
        """Whether content signed by ``signer`` may be used here (see module docstring)."""
        if signer is None:
            return False
        policy, _ = self.policy_state()
        if policy.holds(signer, "writer"):
            return True
        return policy.version == 0 and signer == self.key_id

    def document_problem(self, kind: str, digest: bytes, block: bytes | None) -> str | None:
        """Why a signed cache entry or pack may not be used (None: it may)."""

        if block is None:
            return "it is not signed"
        signer = _signer_of(block, _signing.document_message(kind, digest))
        if signer is None:
            return "its signature is invalid (edited)"
        if not self.trusts(signer):
            return f"it is signed by {signer}, a key that may not write to this store"
        return None

    # verifying ------------------------------------------------------------------------------
    def findings(self) -> list[str]:
        """Every policy version and audit entry that fails, and a rolled-back policy.

        (Objects, cache entries, packs and run records are checked by the store's ``verify``,
        with ``document_problem``.)
        """
        out: list[str] = []
        policy, problems = self.policy_state(fresh=True)
        out.extend(problems)
        entries_, audit_problems = self.audit_state()
        out.extend(audit_problems)
        audited = [
            int(e.detail["version"])
            for e in entries_
            if e.action == "policy" and isinstance(e.detail.get("version"), int)
        ]
        if audited and max(audited) > policy.version:
            out.append(
                f"policy version {max(audited)} was audited but the store's policy is at "
                f"version {policy.version}: newer policy files were removed (a rollback)"
            )
        return out
