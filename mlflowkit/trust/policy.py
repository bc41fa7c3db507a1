"""The policy of a store: which keys hold which roles in which namespaces.

A policy is a chain of documents, one file per version (``policy/<version>.json`` in the
store, each a signed sealed document, kind ``"policy"``). Version ``n`` holds the whole grant
list, ``"version": n`` and ``"prev"``: the BLAKE3 (hex) of version ``n - 1``'s JSON bytes.

Roles: ``reader``, ``writer`` (runs, cache), ``publisher`` (new versions), ``promoter`` (per
stage) and ``admin`` (changes the policy). They nest: ``admin`` holds every role; ``publisher``
and ``promoter`` hold ``writer``; ``writer`` holds ``reader``. A grant's namespace ``"*"``
covers every namespace; a promoter grant's stage ``None`` covers every stage.

Invariants (``resolve``):

* Version 1 counts only when signed by the store's owner key; version ``n > 1`` only when
  signed by a key that is ``admin`` under version ``n - 1``, names ``"version": n`` and
  links to version ``n - 1`` by its digest. The chain stops at the first link that fails; what
  follows is ignored and reported, so a policy written by a non-admin, or an older policy
  replayed under a newer number, never takes effect.
* A store without a (valid) policy belongs to its owner: the owner is ``admin`` everywhere.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

import blake3
import orjson

__all__ = [
    "ROLES",
    "Grant",
    "Policy",
    "resolve",
    "resolve_history",
]

ROLES = ("reader", "writer", "publisher", "promoter", "admin")
#: the roles each role holds (itself included)
_HOLDS: dict[str, frozenset[str]] = {
    "reader": frozenset({"reader"}),
    "writer": frozenset({"writer", "reader"}),
    "publisher": frozenset({"publisher", "writer", "reader"}),
    "promoter": frozenset({"promoter", "writer", "reader"}),
    "admin": frozenset(ROLES),
}
ANY = "*"


@dataclass(frozen=True)
class Grant:
    """``key`` holds ``role`` in ``namespace`` (``"*"``: all), for ``stage`` (promoter only)."""

    role: str
    key: str
    namespace: str = ANY
    stage: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "key": self.key,
            "namespace": self.namespace,
            "stage": self.stage,
        }


@dataclass(frozen=True)
class Policy:
    """One version of a store's policy (version 0: the implicit one of an unpoliced store)."""

    grants: tuple[Grant, ...]
    version: int = 0
    digest: str = ""  # BLAKE3 hex of this version's JSON bytes ("" for version 0)
    by: str | None = None  # the key that signed it
    at: str = ""

    @classmethod
    def implicit(cls, owner: str | None) -> Policy:
        """The policy of a store without one: its owner (if known) is admin everywhere."""
        return cls(() if owner is None else (Grant("admin", owner),))

    def holds(
        self, key: str | None, role: str, namespace: str = ANY, stage: str | None = None
    ) -> bool:
        """Whether ``key`` holds ``role`` in ``namespace`` (and, for promoter, ``stage``).

        ``namespace="*"`` asks whether it holds the role in *some* namespace.
        """
        if key is None:
            return False
        for g in self.grants:
            if g.key != key or role not in _HOLDS.get(g.role, frozenset()):
                continue
            if namespace != ANY and g.namespace not in (ANY, namespace):
                continue
            if (
                role == "promoter"
                and g.role == "promoter"
                and stage is not None
                and g.stage not in (None, stage)
            ):
                continue
            return True
        return False

    def keys_with(self, role: str) -> set[str]:
        """Every key holding ``role`` in some namespace."""
        return {g.key for g in self.grants if role in _HOLDS.get(g.role, frozenset())}

    def changed(self, grants: tuple[Grant, ...], by: str) -> tuple[Policy, bytes]:
        """The next version with ``grants``, and its JSON bytes (to be signed by ``by``)."""
        at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        doc = {
            "version": self.version + 1,
            "prev": self.digest or None,
            "at": at,
            "by": by,
            "grants": [g.to_dict() for g in grants],
        }
        raw = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        nxt = Policy(grants, self.version + 1, blake3.blake3(raw).hexdigest(), by, at)
        return nxt, raw

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "by": self.by,
            "at": self.at,
            "grants": [g.to_dict() for g in self.grants],
        }


def _grants(items: Any) -> tuple[Grant, ...] | None:
    if not isinstance(items, list):
        return None
    out = []
    for g in items:
        if not (isinstance(g, dict) and g.get("role") in ROLES and isinstance(g.get("key"), str)
                and isinstance(g.get("namespace", ANY), str)
                and (g.get("stage") is None or isinstance(g.get("stage"), str))):  # fmt: skip
            return None
        out.append(Grant(g["role"], g["key"], g.get("namespace", ANY), g.get("stage")))
    return tuple(out)


def resolve(
    versions: list[tuple[int, Any, str | None, bytes]],
    owner: str | None,
) -> tuple[Policy, list[str]]:
    """The policy in force, and what was wrong with the chain (see ``resolve_history``)."""
    history, problems = resolve_history(versions, owner)
    return history[-1], problems


def resolve_history(
    versions: list[tuple[int, Any, str | None, bytes]],
    owner: str | None,
) -> tuple[list[Policy], list[str]]:
    """Every valid policy version (the implicit version 0 first), and what was wrong.

    Parameters
    ----------
    versions:
        ``(file number, JSON value or None, signer key id or None, BLAKE3 of the JSON)`` for
        each policy file, in any order (the signature is checked by the caller).
    owner:
        The store owner's key id (None: unknown, then no policy file counts).
    """
    current = Policy.implicit(owner)
    history = [current]
    problems: list[str] = []
    for number, doc, signer, digest in sorted(versions, key=lambda v: v[0]):
        where = f"policy version {number}"
        if problems:
            problems.append(f"{where}: ignored, it follows an invalid version")
            continue
        if not isinstance(doc, dict) or signer is None:
            problems.append(f"{where}: signature missing or invalid")
            continue
        grants = _grants(doc.get("grants"))
        expected = current.version + 1
        if doc.get("version") != number or number != expected:
            problems.append(
                f"{where}: says version {doc.get('version')!r}, expected {expected} (a replayed "
                "or misplaced policy)"
            )
            continue
        if doc.get("prev") != (current.digest or None):
            problems.append(f"{where}: does not follow version {current.version} (replayed?)")
            continue
        if not current.holds(signer, "admin"):
            problems.append(f"{where}: signed by {signer}, who is not admin")
            continue
        if grants is None:
            problems.append(f"{where}: malformed grants")
            continue
        current = Policy(grants, number, digest.hex(), signer, str(doc.get("at", "")))
        history.append(current)
    return history, problems
