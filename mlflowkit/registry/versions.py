"""Publishing and looking up versions of named artifacts on a store.

Invariants
----------
* A version's object is in the store before its version row exists (``put`` first), so a
  version never points at a missing object when it is made.
* Publishing needs the ``publisher`` role in the name's namespace (``mk.AccessDenied``
  before anything is written); lookups see only versions and stages whose signed records
  count (``signed``).
* Publishing content equal to the latest version's (same digest) makes no new version.
* Every lookup that finds nothing raises ``RegistryError`` naming what was asked, what exists
  (the names, the version numbers, the stages held) and how to fix it.
"""

from __future__ import annotations

import json
from typing import Any

from mlflowkit.errors import RegistryError
from mlflowkit.registry import db, signed
from mlflowkit.registry.names import STAGES, Spec, check_name, parse_spec
from mlflowkit.registry.records import ArtifactVersion

__all__ = ["artifact", "artifacts", "publish", "publish_digest", "resolve", "versions"]


def check_metadata(name: str, metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise RegistryError(
            f"metadata of {name!r} must be a dict with string keys, got "
            f"{type(metadata).__qualname__}",
            name=name,
        )
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise RegistryError(
            f"metadata of {name!r} must hold only JSON data (str, int, float, bool, None, lists "
            f"and dicts of those): {exc}. Convert the values, e.g. with str().",
            name=name,
        ) from None
    return dict(metadata)


def publish(
    store: Any, name: str, value: Any, *, metadata: dict[str, Any] | None = None
) -> ArtifactVersion:
    """Store ``value`` and make it the next version of ``name`` (see ``Store.publish``)."""
    from mlflowkit.hashing import hash_value

    check_name(name)
    meta = check_metadata(name, metadata)
    signed.require(store, "publisher", name)  # AccessDenied before anything is written
    digest = hash_value(value)
    store.put(value, digest)
    return publish_digest(store, name, digest, run_id=None, metadata=meta)


def publish_digest(
    store: Any, name: str, digest: str, *, run_id: str | None, metadata: dict[str, Any]
) -> ArtifactVersion:
    """Make the stored object ``digest`` the next version of ``name`` (no-op when latest).

    The caller has checked the publisher role (``signed.require``). A new version's record is
    signed by this process's key and the publication audited.
    """
    version, new = db.insert_version(
        db.index_of(store), name, digest, run_id=run_id, metadata=metadata, store=store
    )
    if new:
        signed.audit(store, "publish", version.spec, {"digest": digest, "run_id": run_id})
    return version


def artifacts(store: Any) -> list[str]:
    """Every artifact name with a version in ``store``, sorted."""
    return db.names(db.index_of(store), store)


def versions(store: Any, name: str) -> list[ArtifactVersion]:
    """Every version of ``name``, oldest first (an empty list for an unknown name)."""
    check_name(name)
    return db.versions(db.index_of(store), name, store)


def _known(store: Any) -> str:
    names = artifacts(store)
    if not names:
        return (
            f"store {store.url} has no named artifacts yet; publish one with "
            f"mk.publish(name, value) in a pipeline or store.publish(name, value)"
        )
    shown = ", ".join(names[:20]) + (f", … ({len(names)} in all)" if len(names) > 20 else "")
    return f"store {store.url} has: {shown}"


def resolve(store: Any, spec: str | Spec) -> ArtifactVersion:
    """The version ``spec`` names (``"name"``, ``"name@3"``, ``"name@mvp"``).

    Raises
    ------
    RegistryError
        Invalid spec, unknown name, version or stage (what exists is listed).
    """
    parsed = spec if isinstance(spec, Spec) else parse_spec(spec)
    idx = db.index_of(store)
    name = parsed.name
    if parsed.version is not None:
        found = db.version_row(idx, name, parsed.version, store)
        if found is not None:
            return found
        existing = db.versions(idx, name, store)
        if not existing:
            raise RegistryError(f"no artifact named {name!r}: {_known(store)}", name=name)
        numbers = [v.version for v in existing]
        raise RegistryError(
            f"{name!r} has no version {parsed.version}: its versions are "
            f"{_ranges(numbers)} (latest {numbers[-1]}). Ask for one of those, or {name!r} "
            f"for the latest.",
            name=name,
        )
    if parsed.stage is not None:
        holders = db.stage_holders(idx, name, store)
        if parsed.stage in holders:
            found = db.version_row(idx, name, holders[parsed.stage], store)
            if found is not None:
                return found
        if db.latest(idx, name, store) is None:
            raise RegistryError(f"no artifact named {name!r}: {_known(store)}", name=name)
        held = ", ".join(f"{s} (version {holders[s]})" for s in STAGES if s in holders)
        raise RegistryError(
            f"no version of {name!r} holds stage {parsed.stage!r}: "
            + (f"the stages held are {held}" if held else "no version holds any stage yet")
            + f". Promote one with store.promote('{name}@<version>', to={parsed.stage!r}).",
            name=name,
        )
    found = db.latest(idx, name, store)
    if found is None:
        raise RegistryError(f"no artifact named {name!r}: {_known(store)}", name=name)
    return found


def artifact(store: Any, spec: str) -> ArtifactVersion:
    """``resolve`` for ``Store.artifact``."""
    return resolve(store, spec)


def _ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)
