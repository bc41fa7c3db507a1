"""Gating: declaring the checks a version must pass to be promoted, and running them.

``@mk.gate("digits-model", to="prototype")`` declares a ``Gate`` and adds it to this process's
table of gates for that artifact and stage; ``promote(..., gates=[...])`` adds gates for one
call. Built in here: ``reproducible`` (always checked for ``mvp``). Users reach all of it as
``mk.gates`` (:mod:`mlflowkit.registry.gates`), which adds ``reproduces``: that gate runs a
pipeline again, so it lives above the run machinery, with ``mk.reproduce``.

Invariants
----------
* A gate is a function of an ``mk.ArtifactVersion`` returning a bool; it may also return
  ``(bool, message)``. ``False``, anything that is not a bool, or an exception fails it; every
  gate is checked (none is skipped because an earlier one failed), so a refusal lists all.
* Declaring the same function again (a module imported twice) replaces the earlier gate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlflowkit.errors import MlflowkitError, RegistryError, StoreError
from mlflowkit.registry.names import check_name, check_stage
from mlflowkit.registry.records import GateResult

if TYPE_CHECKING:
    from mlflowkit.registry.records import ArtifactVersion

__all__ = ["Gate", "gate", "gates_for", "reproducible", "run_gates", "store_of"]


@dataclass(frozen=True)
class Gate:
    """A named check of a version, optionally bound to an artifact name and a stage."""

    name: str
    fn: Callable[[ArtifactVersion], Any]
    artifact: str | None = None
    to: str | None = None

    def __call__(self, version: ArtifactVersion) -> Any:
        return self.fn(version)


_TABLE: dict[tuple[str, str], dict[str, Gate]] = {}


def _identity(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def gate(name: str, *, to: str) -> Callable[[Callable[[ArtifactVersion], Any]], Gate]:
    """Declare a gate for promotions of artifact ``name`` to stage ``to``.

    Examples
    --------
    >>> @mk.gate("digits-model", to="prototype")  # doctest: +SKIP
    ... def accurate_enough(v: mk.ArtifactVersion) -> bool:
    ...     return v.metadata["accuracy"] >= 0.9
    """
    check_name(name)
    check_stage(to, name=name)

    def declare(fn: Callable[[ArtifactVersion], Any]) -> Gate:
        if isinstance(fn, Gate):
            fn = fn.fn
        if not callable(fn):
            raise RegistryError(f"@mk.gate({name!r}, to={to!r}) decorates a function, got {fn!r}")
        made = Gate(getattr(fn, "__name__", "gate"), fn, name, to)
        _TABLE.setdefault((name, to), {})[_identity(fn)] = made
        return made

    return declare


def gates_for(name: str, to: str) -> list[Gate]:
    """The gates declared with ``@mk.gate`` for ``name`` and ``to`` in this process."""
    return list(_TABLE.get((name, to), {}).values())


def _as_gate(item: Any) -> Gate:
    if isinstance(item, Gate):
        return item
    if callable(item):
        return Gate(getattr(item, "__name__", type(item).__name__), item)
    raise RegistryError(
        f"gates= holds {item!r}, which is not callable: expected functions of an "
        f"mk.ArtifactVersion returning a bool (or gates made with @mk.gate)"
    )


def _check(g: Gate, version: ArtifactVersion) -> GateResult:
    try:
        got = g(version)
    except Exception as exc:
        return GateResult(g.name, False, f"raised {type(exc).__name__}: {exc}")
    message = ""
    if isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], str):
        got, message = got
    if type(got).__name__ == "bool_":  # a NumPy bool
        got = bool(got)
    if not isinstance(got, bool):
        return GateResult(
            g.name, False, f"returned {got!r}, expected a bool (True to pass, False to fail)"
        )
    return GateResult(g.name, got, message or ("passed" if got else "returned False"))


def run_gates(version: ArtifactVersion, gates: Iterable[Any]) -> list[GateResult]:
    """Check every gate on ``version``; one result per gate, in order."""
    return [_check(_as_gate(g), version) for g in gates]


# built-in gates ------------------------------------------------------------------------------
def store_of(version: ArtifactVersion) -> Any:
    """The store ``version`` was read from (a gate checks the version there)."""
    store = version._store
    if store is None:
        raise RegistryError(f"{version.spec} was not read from a store; nothing to check")
    return store


def reproducible(version: ArtifactVersion) -> tuple[bool, str]:
    """The built-in ``mvp`` gate: the version can be traced and rebuilt.

    Passes when the run that published it succeeded, every object upstream of it is in the
    store and verifies, its code came from a clean git tree (when it ran in one) and its
    environment is recorded.
    """
    store = store_of(version)
    if version.run_id is None:
        return False, (
            f"{version.spec} was published outside a run (store.publish), so nothing records "
            f"how it was made; publish it from a pipeline with mk.publish"
        )
    try:
        record = store.run(version.run_id)
    except StoreError as exc:
        return False, f"its producing run {version.run_id} is not in the store ({exc})"
    if record.status != "succeeded":
        return False, f"its producing run {record.id} {record.status}"
    problems: list[str] = []
    env = record.environment
    if not env.get("python") or "packages" not in env:
        problems.append(f"run {record.id} recorded no environment")
    if env.get("git_commit") and env.get("git_clean") is not True:
        state = (
            "had uncommitted changes"
            if env.get("git_clean") is False
            else "was not recorded (git was not available when the run published it)"
        )
        problems.append(
            f"its code came from git commit {str(env['git_commit'])[:12]}, whose tree "
            f"{state}; commit the changes and publish again"
        )
    checked = 0
    for digest in _upstream_objects(store, version.digest):
        checked += 1
        try:
            if not store.has(digest):
                problems.append(f"object {digest[:12]} upstream of it is missing (gc?)")
                continue
            store.get(digest)  # verifies the payload before deserializing
        except MlflowkitError as exc:
            problems.append(f"object {digest[:12]} upstream of it does not verify: {exc}")
    if problems:
        return False, "; ".join(problems)
    return True, f"run {record.id} succeeded; {checked} upstream objects verify; env recorded"


def _upstream_objects(store: Any, digest: str) -> list[str]:
    """Digests of the stored values upstream of ``digest`` (itself included): the outputs of
    the user's step calls (an item or attribute view of another value is not stored)."""
    graph = store.lineage(digest)
    found = [digest]
    for node, attrs in graph.nodes(data=True):
        if attrs.get("kind") != "artifact" or node == digest:
            continue
        producers = [
            graph.nodes[p] for p in graph.predecessors(node) if graph.nodes[p].get("kind") == "step"
        ]
        if any(not p.get("internal") and p.get("status") != "failed" for p in producers):
            found.append(node)
    return found
