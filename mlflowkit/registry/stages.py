"""Stages: promoting versions from proof of concept to prototype to MVP.

Invariants
----------
* Each stage of a name is held by at most one version: a stage is a pointer, and promoting
  another version moves it (the history keeps both promotions).
* A version may be promoted to ``poc`` at any time, and to a higher stage only if it holds or
  has held the stage just below. The rule is checked before the gates (a clear error) and again
  inside the transaction that moves the stage (another process may have moved things since).
* Every gate is checked before anything changes; if one fails, ``GateFailed`` lists every gate's
  outcome and nothing changes. If all pass, the stage moves and the ``Promotion`` is recorded in
  one transaction: a crash leaves the old state or the new one.
* Promoting needs the ``promoter`` role for the name's namespace and the stage
  (``mk.AccessDenied`` before any gate runs); the promotion's record is signed and audited.
* Promoting a version to a stage it holds already changes nothing and returns the promotion
  that gave it that stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mlflowkit.errors import GateFailed, RegistryError
from mlflowkit.registry import db, signed
from mlflowkit.registry.gating import gates_for, reproducible, run_gates
from mlflowkit.registry.names import STAGES, check_name, check_stage, parse_spec, stage_below
from mlflowkit.registry.records import ArtifactVersion, Promotion
from mlflowkit.registry.versions import resolve

__all__ = ["history", "promote", "stage_holder"]


def stage_holder(store: Any, name: str, stage: str) -> ArtifactVersion | None:
    """The version of ``name`` holding ``stage`` now, or None."""
    check_name(name)
    check_stage(stage, name=name)
    idx = db.index_of(store)
    number = db.stage_holders(idx, name, store).get(stage)
    return None if number is None else db.version_row(idx, name, number, store)


def history(store: Any, name: str) -> list[Promotion]:
    """Every promotion of ``name``, oldest first."""
    check_name(name)
    return db.history(db.index_of(store), name, store)


def _held(version: int, holders: dict[str, int]) -> list[str]:
    return [s for s in STAGES if holders.get(s) == version]


def _rung_error(
    version: ArtifactVersion, to: str, holders: dict[str, int], past: list[Promotion]
) -> str | None:
    """Why ``version`` may not be promoted to ``to`` now (None when it may)."""
    below = stage_below(to)
    if below is None:
        return None
    if holders.get(below) == version.version:
        return None
    if any(p.version == version.version and p.to_stage == below for p in past):
        return None
    held = [p.to_stage for p in past if p.version == version.version]
    now = _held(version.version, holders)
    state = (
        f"it holds {', '.join(now)}"
        if now
        else f"it has held {', '.join(dict.fromkeys(held))}"
        if held
        else "it has never held a stage"
    )
    return (
        f"cannot promote {version.spec} to {to!r}: a version is promoted one rung at a time "
        f"({' -> '.join(STAGES)}), and {state}, never {below!r}. Promote it to {below!r} "
        f"first: store.promote({version.spec!r}, to={below!r})"
    )


def promote(
    store: Any,
    spec: str,
    *,
    to: str,
    reason: str = "",
    gates: Iterable[Any] = (),
) -> Promotion:
    """Move stage ``to`` of an artifact to the version ``spec`` names, if every gate passes.

    Parameters
    ----------
    store:
        The store holding the artifact.
    spec:
        ``"name@4"`` (also ``"name"`` for the latest, or ``"name@prototype"``).
    to:
        One of ``mk.STAGES``.
    reason:
        Why, recorded with the promotion.
    gates:
        Extra gates for this call, checked after those declared with ``@mk.gate`` (and, for
        ``mvp``, the built-in ``reproducible``).

    Raises
    ------
    AccessDenied
        This process's key lacks ``promoter`` for the name's namespace and stage ``to``.
    RegistryError
        Unknown artifact, version or stage, or a promotion that skips a rung.
    GateFailed
        A gate failed or raised; every gate's outcome is listed; nothing changed.
    """
    to = check_stage(to)
    if not isinstance(reason, str):
        raise RegistryError(f"reason= must be a string, got {type(reason).__qualname__}")
    signed.require(store, "promoter", parse_spec(spec).name, stage=to)  # before anything else
    version = resolve(store, spec)
    idx = db.index_of(store)
    holders = db.stage_holders(idx, version.name, store)
    past = db.history(idx, version.name, store)
    if holders.get(to) == version.version:
        for p in reversed(past):
            if p.version == version.version and p.to_stage == to:
                return p
    error = _rung_error(version, to, holders, past)
    if error is not None:
        raise RegistryError(error, name=version.name)
    checks: list[Any] = [reproducible] if to == "mvp" else []
    checks += gates_for(version.name, to)
    checks += list(gates)
    results = run_gates(version, checks)
    failed = [r for r in results if not r.passed]
    if failed:
        lines = "\n".join(
            f"  {'passed' if r.passed else 'FAILED'}  {r.name}: {r.message}" for r in results
        )
        raise GateFailed(
            f"promotion of {version.spec} to {to!r} refused: {len(failed)} of {len(results)} "
            f"gate(s) failed; nothing changed.\n{lines}\nFix what the failed gates check, or "
            f"promote another version.",
            name=version.name,
            results=results,
        )

    def check(now: dict[str, int], now_past: list[Promotion]) -> str | None:
        again = _rung_error(version, to, now, now_past)
        if again is not None:
            raise RegistryError(again + " (the stages changed while the gates ran)")
        held = _held(version.version, now)
        return held[-1] if held else None

    promotion = db.move_stage(
        idx,
        version.name,
        version.version,
        to,
        check=check,
        reason=reason,
        gates=results,
        store=store,
    )
    signed.audit(
        store,
        "promote",
        version.spec,
        {"to": to, "from": promotion.from_stage, "digest": version.digest},
    )
    return promotion
