"""The governance methods of a store: its key, owner, policy, audit trail and adoption.

A mixin of the public :class:`mlflowkit.store.fsspec.Store` (layer 6, like it: ``adopt`` signs
the registry's records through :mod:`mlflowkit.registry`). The decisions are made by the
store's ``Guard`` (``_trust``) and :mod:`mlflowkit.trust`.

Invariants:

* Every policy change is signed by an admin, written as a new version (never over an old
  one) and audited; the last admin grant is never revoked.
* ``adopt`` signs only objects and records that are unsigned, never re-signs what someone
  else signed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflowkit.errors import StoreError
from mlflowkit.store._trust import SAFE_SERIALIZERS, Guard
from mlflowkit.store.formats import (
    CorruptFile,
    pack_header,
    parse_header,
    payload_blake3,
    sign_run,
    unsign_run,
)

if TYPE_CHECKING:
    from mlflowkit.store.objects import ObjectStore
    from mlflowkit.trust.audit import AuditEntry
    from mlflowkit.trust.policy import Policy

__all__ = ["Governance"]


class Governance:
    """Governance methods, mixed into ``Store`` (which provides the attributes below)."""

    _guard: Guard
    _io: ObjectStore
    url: str
    root: str

    if TYPE_CHECKING:

        def _require(self) -> None: ...
        def _ensure(self) -> None: ...
        def _object_files(self, area: str, suffix: str = "") -> list[Any]: ...
        def _object_path(self, digest: str) -> str: ...
        def _run_files(self) -> list[Any]: ...
        def _run_path(self, run_id: str, suffix: str = ".json") -> str: ...

    @property
    def key_id(self) -> str:
        """The key id this store object signs its writes with."""
        return self._guard.key_id

    @property
    def owner(self) -> str | None:
        """The key id of the store's owner (None: made by an earlier version, not adopted)."""
        self._require()
        return self._guard.owner()

    @property
    def policy(self) -> Policy:
        """The policy in force (version 0: none written; the owner is admin everywhere)."""
        self._require()
        return self._guard.policy_state(fresh=True)[0]

    def grant(
        self, role: str, key_id: str, *, namespace: str | None = None, stage: str | None = None
    ) -> Policy:
        """Give ``key_id`` ``role`` (in ``namespace``; all when None); the new policy.

        Signed by this process's key, which must be ``admin`` (a new store is created, owned
        by it). The change is audited.

        Raises
        ------
        AccessDenied
            This process's key is not admin.
        StoreError
            An unknown role or a malformed key id.
        """
        from mlflowkit.trust.policy import Grant

        grant = Grant(*self._grant_args(role, key_id, namespace, stage))
        self._ensure()  # a new store is made, owned by this key
        policy = self.policy
        if grant in policy.grants:
            return policy
        return self._guard.set_policy((*policy.grants, grant))

    def revoke(
        self, role: str, key_id: str, *, namespace: str | None = None, stage: str | None = None
    ) -> Policy:
        """Take ``role`` (in ``namespace``; all grants of it when None) from ``key_id``.

        What the key signed before stays in the store but is no longer trusted: readers
        refuse its pickles and ignore its cache entries from now on (``verify`` lists them).

        Raises
        ------
        AccessDenied
            This process's key is not admin.
        StoreError
            The last admin grant would go (nobody could change the policy again).
        """
        role, key_id, ns, stage = self._grant_args(role, key_id, namespace, stage)
        self._ensure()
        policy = self.policy
        kept = tuple(
            g
            for g in policy.grants
            if not (
                g.role == role
                and g.key == key_id
                and (namespace is None or g.namespace == ns)
                and (stage is None or g.stage == stage)
            )
        )
        if len(kept) == len(policy.grants):
            return policy
        if not any(g.role == "admin" for g in kept):
            raise StoreError(
                f"revoking admin from {key_id} would leave store {self.url} without an admin, "
                "and nobody could change its policy again; grant admin to another key first",
                url=self.url,
            )
        return self._guard.set_policy(kept)

    def _grant_args(
        self, role: str, key_id: str, namespace: str | None, stage: str | None
    ) -> tuple[str, str, str, str | None]:
        from mlflowkit.trust.keys import KEY_ID
        from mlflowkit.trust.policy import ROLES

        if role not in ROLES:
            raise StoreError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
        if not KEY_ID.fullmatch(key_id):
            raise StoreError(
                f"malformed key id {key_id!r}: expected 'ed25519:' and 32 hex characters, as "
                "`mlflowkit keys list` prints"
            )
        if stage is not None and role != "promoter":
            raise StoreError(f"--stage applies to the promoter role only, not to {role!r}")
        return role, key_id, namespace or "*", stage

    def audit(self, since: str | None = None) -> list[AuditEntry]:
        """The audit trail, oldest first (from ``since``, an ISO-8601 time, when given).

        Entries that fail their checks are listed by ``verify``.
        """
        self._require()
        entries = self._guard.audit_state()[0]
        if since is not None:
            entries = [e for e in entries if _iso_after(e.at, since)]
        return entries

    def adopt(self) -> list[str]:
        """Take on a store made by an earlier version; the digests of the objects signed.

        Records this process's key as the store's owner when none is recorded, and signs
        every unsigned object whose serializer can run code (pickles), every unsigned
        finished run record, and every unsigned artifact version and promotion, with it: do
        this only for a store whose content you trust.
        Unsigned cache entries need nothing: they are recomputed (cheaply: their objects
        exist) the next time they are needed.

        Raises
        ------
        AccessDenied
            The store has an owner or a policy and this key is not admin.
        """
        self._require()
        g = self._guard
        g.forget_owner()
        if g.owner() is None:
            from mlflowkit.registry.db import index_of
            from mlflowkit.store.layout import MARKER

            if self._io.listdir(f"{self.root}/registry"):
                index_of(self)  # a lost index is filled back while unsigned records still count
            self._io.write_atomic(f"{self.root}/{MARKER}", (g.marker_bytes(),), False)
            g.forget_owner()
            g.owner()
        g.check_write("admin")
        self._ensure()
        adopted = []
        for _, digest in self._object_files("objects"):
            path = self._object_path(digest)
            data = self._io.read(path)
            if data is None:
                continue
            try:
                name, size, checksum, head, address, signature = parse_header(data)
            except CorruptFile:
                continue
            if name in SAFE_SERIALIZERS or signature is not None or address not in (None, digest):
                continue
            payload = data[head:]
            if len(payload) != size or payload_blake3(payload) != checksum:
                continue
            sig = g.sign_object(digest, name, checksum)
            header = pack_header(name, payload, digest, signature=sig, checksum=checksum)
            self._io.write_atomic(path, (header, payload), False)
            adopted.append(digest)
        runs = 0
        for rf in self._run_files():
            path = self._run_path(rf.run_id)
            data = self._io.read(path) if rf.stamp.startswith(".json:") else None
            if data is not None and unsign_run(data)[1] is None:
                self._io.write_atomic(path, (sign_run(data, g.sign_document("run")),), False)
                runs += 1
        from mlflowkit.registry.db import sign_unsigned

        records = sign_unsigned(self)
        g.append_audit(
            "adopt", self.url, {"objects": len(adopted), "runs": runs, "registry": records}
        )
        return sorted(adopted)


def _iso_after(at: str, since: str) -> bool:
    """Whether ISO time ``at`` is at or after ``since`` (a naive ``since`` is UTC)."""
    import datetime as dt

    def parse(text: str) -> dt.datetime:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)

    try:
        return parse(at) >= parse(since)
    except ValueError as exc:
        raise StoreError(
            f"invalid time {since!r}: expected ISO-8601, e.g. 2026-01-31T12:00"
        ) from exc
