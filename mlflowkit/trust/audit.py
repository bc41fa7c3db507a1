"""The audit trail: who did what to a store, as a hash chain of signed entries.

Entries are sealed, signed documents (kind ``"audit"``), one file each:
``audit/<seq>.json`` with ``seq`` 1, 2, ... Entry ``n`` names the BLAKE3 (hex) of entry
``n - 1``'s JSON bytes in ``"prev"``.

Invariants (``check_chain``):

* Entry numbers are contiguous from 1, each links to the one before, each verifies against
  the key it names in ``"by"``, and that key held the role its action needs (``ACTION_ROLES``)
  under the policy in force: a removed, reordered, edited or forged entry is reported.
* Removing the newest entries leaves a valid shorter chain; it is caught only where
  something else remembers them (a policy version newer than any audited one is reported).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["ACTION_ROLES", "AuditEntry", "check_chain", "new_entry"]

#: the role a key needs for each action (actions not listed need ``writer``)
ACTION_ROLES = {
    "policy": "admin",
    "adopt": "admin",
    "gc": "writer",
    "delete": "writer",
    "publish": "publisher",
    "promote": "promoter",
}


@dataclass(frozen=True)
class AuditEntry:
    """One audited action.

    Attributes
    ----------
    at:
        When (ISO-8601, UTC).
    by:
        The key id that signed it.
    action:
        ``"policy"``, ``"gc"``, ``"delete"``, ``"adopt"`` (and, from the registry,
        ``"publish"``, ``"promote"``).
    target:
        What it acted on (a digest, a name, ``"policy"``).
    detail:
        Facts about it (JSON-able).
    """

    at: str
    by: str
    action: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)
    seq: int = 0


def new_entry(
    seq: int, prev: str | None, by: str, action: str, target: str, detail: dict[str, Any]
) -> bytes:
    """The JSON bytes of audit entry ``seq`` (to be sealed and signed by ``by``)."""
    at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    doc = {
        "seq": seq,
        "prev": prev,
        "at": at,
        "by": by,
        "action": action,
        "target": target,
        "detail": detail,
    }
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def check_chain(
    files: list[tuple[int, Any, str | None, bytes]],
    may: Callable[[str, str], bool],
) -> tuple[list[AuditEntry], list[str]]:
    """The entries of a valid chain prefix... and every problem found.

    Parameters
    ----------
    files:
        ``(file number, JSON value or None, signer key id or None, BLAKE3 of the JSON)``.
    may:
        ``may(key_id, role)``: whether a key held a role (under the policy in force).

    Returns
    -------
    entries, problems:
        The entries that verify (in order), and one line per entry that does not.
    """
    entries: list[AuditEntry] = []
    problems: list[str] = []
    prev: str | None = None
    expected = 1
    for number, doc, signer, digest in sorted(files, key=lambda f: f[0]):
        where = f"audit entry {number}"
        if number != expected:
            problems.append(f"audit entries {expected}..{number - 1} are missing (removed?)")
        expected = number + 1
        if not isinstance(doc, dict) or signer is None:
            problems.append(f"{where}: signature missing or invalid (edited?)")
            prev = digest.hex() if digest else None
            continue
        if doc.get("seq") != number:
            problems.append(f"{where}: says it is entry {doc.get('seq')!r} (moved?)")
        if doc.get("prev") != prev and not (number == 1 and doc.get("prev") is None):
            problems.append(f"{where}: does not follow the entry before it (removed or edited?)")
        if doc.get("by") != signer:
            problems.append(f"{where}: names {doc.get('by')!r} but is signed by {signer}")
        action = str(doc.get("action", ""))
        role = ACTION_ROLES.get(action, "writer")
        if not may(signer, role):
            problems.append(f"{where}: {action} by {signer}, who does not hold {role}")
        prev = digest.hex()
        detail = doc.get("detail")
        entries.append(
            AuditEntry(
                str(doc.get("at", "")),
                signer,
                action,
                str(doc.get("target", "")),
                detail if isinstance(detail, dict) else {},
                number,
            )
        )
    return entries, problems
