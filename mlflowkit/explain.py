"""``Plan.explain``: would each step call hit the cache or execute, and why.

Invariant: explaining reads the store (cache entries and run records) and never executes or
loads a value. A step whose inputs depend on a step that will execute is reported as
``execute`` with that upstream step as the reason (its output is not known yet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflowkit.cache import Cache
from mlflowkit.executors.base import Input
from mlflowkit.keys import KeyMaker
from mlflowkit.outcomes import Rehearsal
from mlflowkit.records import RunRecord, StepRun
from mlflowkit.scheduler import rehearse
from mlflowkit.wiring import safe_repr

if TYPE_CHECKING:
    from mlflowkit.plan import Node
    from mlflowkit.plan import TracedPlan as Plan
    from mlflowkit.store.base import ArtifactStore

__all__ = ["Explanation", "explain"]


#: the words an explanation table uses for each action, as the run tables do for statuses
_ACTION_WORDS = {"hit": "cached", "execute": "execute"}


class Explanation(list):  # type: ignore[type-arg]
    """A list of per-step dicts that prints as a readable table.

    Every node of the plan has an entry (``action`` is ``"hit"`` or ``"execute"``); the
    tables leave out the internal ones named in ``internal`` (items of an unpacked tuple,
    attributes, gathers), as every listing of step calls does, and say *cached* for a hit.
    """

    internal: frozenset[str] = frozenset()

    def __str__(self) -> str:
        shown = [e for e in self if e["step"] not in self.internal]
        width = max((len(e["step"]) for e in shown), default=4)
        lines = [f"{'step':<{width}}  action   why"]
        for e in shown:
            action = _ACTION_WORDS.get(e["action"], e["action"])
            lines.append(f"{e['step']:<{width}}  {action:<7}  {e['why']}")
        return "\n".join(lines)


def _previous(records: list[RunRecord], pipeline: str) -> dict[str, tuple[StepRun, RunRecord]]:
    """The latest record of each step-call name in earlier runs of this pipeline."""
    latest: dict[str, tuple[StepRun, RunRecord]] = {}
    for record in records:  # newest first
        if record.pipeline != pipeline:
            continue
        for s in record.steps:
            if s.key and s.name not in latest:
                latest[s.name] = (s, record)
    return latest


def _moved_artifact(plan: Plan, value: Any, old_run: RunRecord) -> str | None:
    """``"artifact 'feats' moved from version 3 to version 4"`` when ``value`` is read from a
    named artifact whose version differs from the one the earlier run read (else None)."""
    if not isinstance(value, Input):
        return None
    consumed = plan.consumes.get(value.node)
    if consumed is None:
        return None
    now = consumed.version
    before = next((c for c in old_run.consumed if c.get("node") == value.node), None)
    if before is None:
        return f"now read from named artifact {now.spec}, new since the last run"
    if before.get("version") == now.version and before.get("digest") == now.digest:
        return None
    return (
        f"named artifact {now.name!r} moved from version {before.get('version')} to version "
        f"{now.version} ({_short(before.get('digest'))} -> {_short(now.digest)})"
    )


def _short(digest: str | None) -> str:
    return digest[:10] if digest else "none"


#: the words for what a dry run decided without looking up the step call's own key
_WHY = {
    "uncached": "cache=False: always executes",
    "fan-unknown": "fan-out over a list not in the store yet",
    "item": "an item of a stored result (no work of its own)",
    "stored": "same code, inputs and packages as a stored result",
}


def explain(plan: Plan, store: ArtifactStore, keys: KeyMaker) -> Explanation:
    """Explain each step call of ``plan`` against ``store``; see the module docstring.

    A dry run of the scheduler's walk (``scheduler.rehearse``) decides, node by node, what a
    run would do; this module only puts its verdicts into words, and for a step call that
    would execute compares it with the latest earlier run of that call.
    """
    known = {name: c.version.digest for name, c in plan.consumes.items()}
    walked = rehearse(plan.nodes, Cache(store), keys, Rehearsal(known))
    # a store not created yet has no runs to compare
    previous = _previous(store.runs() if store.exists() else [], plan.pipeline)
    out = Explanation()
    out.internal = frozenset(n for n, node in plan.nodes.items() if node.kind == "derived")
    for name, node in plan.nodes.items():
        verdict = walked.verdicts[name]
        reason = verdict.reason
        entry: dict[str, Any] = {"step": name, "key": verdict.key, "action": verdict.action}
        if reason in _WHY:
            entry["why"] = _WHY[reason]
        elif reason == "known":  # mk.artifact: the version resolved while planning
            version = plan.consumes[name].version
            entry["why"] = (
                f"named artifact {version.spec} ({_short(version.digest)}), read from the store"
            )
        elif reason == "upstream":
            entry["why"] = (
                f"upstream step {verdict.cause!r} will execute; this one executes unless that "
                "gives the same output again (early cutoff)"
            )
        elif reason == "fan-partial":
            entry["why"] = f"{verdict.count} of {verdict.total} fan-out elements will execute"
        elif reason == "fan-stored":
            entry["why"] = f"all {verdict.total} fan-out elements are stored"
        elif reason == "fan-collect":
            entry["why"] = f"all {verdict.total} fan-out elements are stored; collecting them again"
        else:  # a miss: what changed since the last run of this step call
            record = walked.records[name]
            _, packages = keys.code(node.step)
            entry["why"] = _why_miss(
                plan, node, record, verdict.args or {}, packages, previous.get(name)
            )
        out.append(entry)
    return out


def _why_miss(
    plan: Plan,
    node: Node,
    record: StepRun,
    args: dict[str, Any],
    packages: dict[str, str],
    prev: tuple[StepRun, RunRecord] | None,
) -> str:
    """Why a step call misses the cache: what differs from its latest earlier run."""
    if prev is None:
        return "no earlier run of this step call in the store"
    old, old_run = prev
    code, inputs = record.code_digest, record.inputs
    reasons: list[str] = []
    if old.step and old.step != node.step.qualified_name:
        reasons.append(
            f"step identity changed ({old.step} -> {node.step.qualified_name}): the "
            f"function was renamed or moved, or its module was run as a script before "
            f"(__main__) and is imported now"
        )
    if old.code_digest != code:
        what = "version" if node.step.identity.version else "code"
        reasons.append(f"{what} changed ({_short(old.code_digest)} -> {_short(code)})")
    for pname in sorted(set(inputs) | set(old.inputs)):
        before, now = old.inputs.get(pname), inputs.get(pname)
        if before != now:
            value = args.get(pname)
            moved = _moved_artifact(plan, value, old_run)
            if moved is not None:
                reasons.append(f"input {pname!r}: {moved}")
            elif isinstance(value, Input):
                reasons.append(f"input {pname!r} changed ({_short(before)} -> {_short(now)})")
            else:
                shown = safe_repr(value)
                now_text = f"now {shown}" if len(shown) <= 40 else _short(now)
                reasons.append(f"param {pname!r} changed ({now_text})")
    old_packages = old_run.environment.get("packages", {})
    for dist, version in sorted(packages.items()):
        if dist in old_packages and old_packages[dist] != version:
            reasons.append(f"package {dist} changed ({old_packages[dist]} -> {version})")
    if not reasons:
        reasons.append("stored result missing (garbage-collected, corrupt or never stored)")
    return "; ".join(reasons)
