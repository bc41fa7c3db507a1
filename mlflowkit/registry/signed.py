"""Signed registry records: who may publish and promote, and which records readers believe.

A version or a promotion is a *record*: a small JSON document (the columns of its index row,
plus ``"policy"``, the policy version in force when it was made, and, for a promotion, its
``"seq"`` and the ``"digest"`` of the version it moves) sealed and signed by the writer's key
(kinds ``"version"`` and ``"promotion"``). The same bytes are the journal file and the index
row's ``record`` column: the index is a cache of signed records, never their proof.

Invariants
----------
* A record counts only when its signature verifies, the key it names (``created_by`` /
  ``by``) is the key that signed it, its ``"policy"`` is a valid version of the store's policy,
  and that key held ``publisher`` (a version) or ``promoter`` for the stage (a promotion) in
  the name's namespace under that version. Revoking a key later does not undo what it did
  while it held the role (like the audit trail): records are history.
* An unsigned record (an earlier version's store, or an index row from before records were
  signed) counts only in a store with neither owner nor policy; ``store adopt`` signs such
  records with the adopting key.
* Stages are derived from the valid promotions, replayed in order; the ``registry_stages``
  rows are a convenience that readers never trust.
* Nothing here runs for a pipeline that publishes nothing; a key is loaded (cryptography
  imported) only to sign a new record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from mlflowkit.errors import AccessDenied
from mlflowkit.store.seams import HasSeams

__all__ = [
    "ROLE",
    "Judged",
    "audit",
    "is_unsigned",
    "judge",
    "namespace_of",
    "require",
    "seal",
    "stamp",
]

#: the role that makes each kind of record
ROLE = {"version": "publisher", "promotion": "promoter"}
#: the field naming the key that made each kind of record
_BY = {"version": "created_by", "promotion": "by"}


def namespace_of(name: str) -> str:
    """The namespace of an artifact name: what comes before its last ``/``.

    A name without one is in the default namespace, ``""``, which only grants made without
    ``--namespace`` cover.
    """
    return name.rpartition("/")[0]


def _guard(store: Any) -> Any:
    """The store's guard (its seams'); None for a store without one (no signing, no roles)."""
    return store.seams.guard if isinstance(store, HasSeams) else None


def require(store: Any, role: str, name: str, stage: str | None = None) -> None:
    """Raise ``AccessDenied`` unless this process's key holds ``role`` for ``name`` (and stage).

    Cheap: no cryptography (the key id is read without loading the key).
    """
    guard = _guard(store)
    if guard is None:
        return
    namespace = namespace_of(name)
    guard.check_write(role, namespace)
    if stage is None or guard.unowned():
        return
    policy, _ = guard.policy_state()
    me = guard.key_id
    if policy.holds(me, role, namespace, stage=stage):
        return
    where = f"namespace {namespace!r}" if namespace else "the default namespace"
    raise AccessDenied(
        f"key {me} lacks the {role} role for stage {stage!r} in {where} of store "
        f"{store.url}; ask an admin of the store to run `mlflowkit policy grant {role} {me} "
        f"--stage {stage}" + (f" --namespace {namespace}" if namespace else "") + f" --store "
        f"{store.url}`, or sign with a key that holds it ($MLFLOWKIT_KEY)",
        role=role,
        namespace=namespace,
        key_id=me,
    )


def stamp(store: Any, kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its maker's key id and the policy version in force filled in."""
    guard = _guard(store)
    if guard is None:
        return dict(record, policy=0)
    return dict(record, **{_BY[kind]: guard.key_id}, policy=guard.policy_state()[0].version)


def seal(store: Any, kind: str, record: dict[str, Any]) -> bytes:
    """The sealed record, signed by this process's key (loaded now: the one costly step)."""
    from mlflowkit.store.formats import seal_document

    guard = _guard(store)
    raw = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return seal_document(raw, None if guard is None else guard.sign_document(kind))


@dataclass(frozen=True)
class Judged:
    """A record read back: its content (None when unreadable) and why it does not count."""

    record: dict[str, Any] | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.record is not None and self.problem is None


def judge(store: Any, kind: str, data: bytes | None, row: dict[str, Any] | None = None) -> Judged:
    """Read and judge one record: ``data`` (the sealed bytes, or an earlier version's plain
    JSON journal file), or, when None, ``row`` (an index row from before records were signed).
    """
    from mlflowkit.store.formats import unseal_document

    block: bytes | None = None
    digest = b""
    record: Any = row
    if data is not None:
        record, block, digest = unseal_document(data)
        if record is None:
            try:
                record = json.loads(data)  # an earlier version's journal file: plain JSON
            except ValueError:
                return Judged(None, "it is unreadable (damaged)")
            block = None
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        return Judged(None, "it is unreadable (damaged)")
    return Judged(record, _problem(store, kind, record, block, digest))


def is_unsigned(data: bytes | None) -> bool:
    """Whether stored record bytes carry no signature (None: an index row without a record)."""
    if data is None:
        return True
    from mlflowkit.store.formats import unseal_document

    value, block, _ = unseal_document(data)
    return value is None or block is None


def _problem(
    store: Any, kind: str, record: dict[str, Any], block: bytes | None, digest: bytes
) -> str | None:
    guard = _guard(store)
    if guard is None:
        return None
    if block is None:
        if guard.unowned():
            return None
        return (
            "it is not signed (made before records were signed? an admin who trusts it can "
            "sign it with `mlflowkit store adopt`)"
        )
    signer = guard.document_signer(kind, digest, block)
    if signer is None:
        return "its signature is invalid (edited)"
    if record.get(_BY[kind]) != signer:
        return f"it names {record.get(_BY[kind])!r} but is signed by {signer}"
    if guard.unowned():
        return None
    history, _ = guard.policy_history()
    number = record.get("policy")
    if not isinstance(number, int) or not 0 <= number < len(history):
        return f"it names policy version {number!r}, which is not a valid one of this store"
    role = ROLE[kind]
    namespace = namespace_of(str(record["name"]))
    stage = record.get("to_stage") if kind == "promotion" else None
    if not history[number].holds(signer, role, namespace, stage=stage):
        what = role + (f" for stage {stage!r}" if stage else "")
        where = f"namespace {namespace!r}" if namespace else "the default namespace"
        return f"it is signed by {signer}, who did not hold {what} in {where}"
    return None


def audit(store: Any, action: str, target: str, detail: dict[str, Any]) -> None:
    """Append ``action`` to the store's audit trail (a store without a guard has none)."""
    guard = _guard(store)
    if guard is not None:
        guard.append_audit(action, target, detail)
