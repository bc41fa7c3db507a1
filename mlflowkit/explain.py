"""``Plan.explain``: would each step call hit the cache or execute, and why.

Invariant: explaining reads the store (cache entries and run records) and never executes or
loads a value. A step whose inputs depend on a step that will execute is reported as
``execute`` with that upstream step as the reason (its output is not known yet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflowkit.errors import HashingError
from mlflowkit.executors.base import Input
from mlflowkit.keys import KeyMaker
from mlflowkit.placeholders import map_leaves
from mlflowkit.plan import OPS as _OPS
from mlflowkit.plan import Node, Ref
from mlflowkit.records import RunRecord, StepRun
from mlflowkit.wiring import safe_repr

if TYPE_CHECKING:
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


def _replace_refs(template: Any, digests: dict[str, str]) -> Any:
    return map_leaves(template, Ref, lambda ref: Input(ref.node, digests[ref.node], None))


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


def _item_digest(node: Node, metas: dict[str, dict[str, Any]]) -> str | None:
    """The digest of ``parent[i]`` from the items its parent reported, as the scheduler does."""
    if node.kind != "derived" or node.step is not _OPS["getitem"]:
        return None
    index = node.args.get("key")
    items = metas.get(node.deps[0], {}).get("items")
    if items is None or type(index) is not int or not -len(items) <= index < len(items):
        return None
    digest: str | None = items[index][0]
    return digest


def _explain_map(
    node: Node,
    digests: dict[str, str],
    metas: dict[str, dict[str, Any]],
    keys: KeyMaker,
    store: ArtifactStore,
) -> tuple[str, str, str | None] | None:
    """Expand a run-time fan-out from the item digests of its stored list, as a run would.

    Returns ``(action, why, output digest or None)``, or None when the list's items are not
    known without loading it.
    """
    items_for: dict[str, list[str]] = {}
    fan = node.fan or {}
    for pname, source in fan.items():
        if isinstance(source, Ref):
            items = metas.get(source.node, {}).get("items")
            if items is None or any(digest is None for digest, _ in items):
                return None
            items_for[pname] = [digest for digest, _ in items]
        else:
            items_for[pname] = [keys.input_digest(_replace_refs(v, digests)) for v in source]
    lengths = {len(v) for v in items_for.values()}
    if len(lengths) != 1:
        return None
    n = lengths.pop()
    broadcast = {
        pname: keys.input_digest(_replace_refs(value, digests))
        for pname, value in node.args.items()
        if pname not in fan
    }
    outputs: list[str] = []
    for i in range(n):
        inputs = {**broadcast, **{p: items[i] for p, items in items_for.items()}}
        hit = store.get_cache(keys.key(node.step, inputs))
        if hit is not None:
            outputs.append(hit.output_digest)
    if len(outputs) < n:
        return "execute", f"{n - len(outputs)} of {n} fan-out elements will execute", None
    elems = tuple(Input(f"{node.name}[{i}]", d, None) for i, d in enumerate(outputs))
    gathered = store.get_cache(keys.key(_OPS["gather"], {"items": keys.input_digest(elems)}))
    if gathered is None:
        return "execute", f"all {n} fan-out elements are stored; collecting them again", None
    metas[node.name] = gathered.meta
    return "hit", f"all {n} fan-out elements are stored", gathered.output_digest


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


def explain(plan: Plan, store: ArtifactStore, keys: KeyMaker) -> Explanation:
    """Explain each step call of ``plan`` against ``store``; see the module docstring."""
    digests: dict[str, str] = {}
    metas: dict[str, dict[str, Any]] = {}
    executing: dict[str, str] = {}  # node -> first upstream cause
    # a store not created yet has no runs to compare
    previous = _previous(store.runs() if store.exists() else [], plan.pipeline)
    out = Explanation()
    out.internal = frozenset(n for n, node in plan.nodes.items() if node.kind == "derived")
    for name, node in plan.nodes.items():
        entry: dict[str, Any] = {"step": name, "key": None}
        blocked = next((d for d in node.deps if d in executing or d not in digests), None)
        consumed = plan.consumes.get(name)
        if consumed is not None:  # mk.artifact: the version resolved while planning
            version = consumed.version
            digests[name] = version.digest
            entry.update(
                action="hit",
                why=f"named artifact {version.spec} ({_short(version.digest)}), read from the "
                "store",
            )
            out.append(entry)
            continue
        if not node.step.identity.cache:
            entry.update(action="execute", why="cache=False: always executes")
            executing[name] = name
            out.append(entry)
            continue
        if node.kind == "map" and blocked is None:
            found = _explain_map(node, digests, metas, keys, store)
            if found is not None:
                action, why, digest = found
                entry.update(action=action, why=why)
                if digest is None:
                    executing[name] = name
                else:
                    digests[name] = digest
                out.append(entry)
                continue
        if node.kind == "map":
            entry.update(action="execute", why="fan-out over a list not in the store yet")
            executing[name] = name
            out.append(entry)
            continue
        if blocked is not None:
            cause = executing.get(blocked, blocked)
            entry.update(
                action="execute",
                why=f"upstream step {cause!r} will execute; this one executes unless that "
                "gives the same output again (early cutoff)",
            )
            executing[name] = cause
            out.append(entry)
            continue
        args = _replace_refs(node.args, digests)
        inputs: dict[str, str] = {}
        for pname, template in args.items():
            try:
                inputs[pname] = keys.input_digest(template)
            except HashingError as exc:  # say which step call and parameter
                raise HashingError(
                    f"Step {name!r}, parameter {pname!r} (at {node.location}): {exc}",
                    type_name=exc.type_name,
                ) from exc
        key = keys.key(node.step, inputs)
        code, packages = keys.code(node.step)
        entry["key"] = key
        node.key = key
        item = _item_digest(node, metas)
        if item is not None and not node.persist:
            digests[name] = item
            metas[name] = {}
            entry.update(action="hit", why="an item of a stored result (no work of its own)")
            out.append(entry)
            continue
        hit = store.get_cache(key) if node.step.identity.cache else None
        if hit is not None:
            digests[name] = hit.output_digest
            metas[name] = hit.meta
            entry.update(action="hit", why="same code, inputs and packages as a stored result")
            out.append(entry)
            continue
        executing[name] = name
        entry["action"] = "execute"
        prev = previous.get(name)
        if prev is None:
            entry["why"] = "no earlier run of this step call in the store"
            out.append(entry)
            continue
        old, old_run = prev
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
        entry["why"] = "; ".join(reasons)
        out.append(entry)
    return out
