"""``mk.reproduce``: re-execute a past run from scratch and compare every output digest.

The run's record names the pipeline function (``source``: module, qualified name, file), its
parameters and the named artifact versions it read. Reproducing imports that function, plans it
again with those parameters (each ``mk.artifact`` pinned to the version the run read), and runs
the plan on an empty scratch store (a temporary folder) into which only the consumed versions'
objects are copied: every step call executes, nothing comes from the cache. Then each step
call's output digest is compared with the record.

Invariants
----------
* The store the run came from is only read, never written; the scratch store is deleted after.
* A step whose output differs (or that fails now, or is missing from the new plan) is listed in
  ``differences``; ``matches`` is True only when there is none.
* A record made before runs kept their pipeline's source raises ``RegistryError`` saying so.

``reproduces`` is the gate that requires it (``mk.gates.reproduces``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlflowkit.errors import MlflowkitError, RegistryError, RunFailed
from mlflowkit.registry.gating import store_of

if TYPE_CHECKING:
    from mlflowkit.registry.records import ArtifactVersion

__all__ = ["Reproduction", "reproduce", "reproduces"]


@dataclass(frozen=True)
class Reproduction:
    """The outcome of ``mk.reproduce``.

    Attributes
    ----------
    run_id:
        The run that was reproduced.
    matches:
        True when every step call gave its recorded output digest again.
    differences:
        ``(step, recorded_digest, new_digest)`` for each step call that did not (``new_digest``
        is None when the call failed or is no longer in the plan).
    compared:
        The step calls compared, in the run's order.
    new_run_id:
        The id of the run made in the scratch store (gone with it).
    """

    run_id: str
    matches: bool
    differences: list[tuple[str, str, str | None]] = field(default_factory=list)
    compared: list[str] = field(default_factory=list)
    new_run_id: str | None = None

    def __str__(self) -> str:
        head = (
            f"run {self.run_id} reproduces: {len(self.compared)} step calls, every output "
            f"digest equal"
            if self.matches
            else f"run {self.run_id} does NOT reproduce: {len(self.differences)} of "
            f"{len(self.compared)} step calls gave another output"
        )
        lines = [head]
        for step, recorded, new in self.differences:
            lines.append(f"  {step}: recorded {recorded[:12]}, now {(new or 'none')[:12]}")
        return "\n".join(lines)


def _import_pipeline(source: dict[str, str], run_id: str) -> Any:
    """The pipeline object the record's ``source`` names."""
    import importlib
    import importlib.util

    module_name, qualname, path = source.get("module"), source.get("qualname"), source.get("file")
    if not qualname or "<locals>" in qualname:
        raise RegistryError(
            f"run {run_id}: its pipeline {qualname!r} was defined inside a function, so it "
            f"cannot be imported again to reproduce the run. Define the pipeline at the top "
            f"level of a module."
        )
    module: Any = None
    if module_name and module_name != "__main__":
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            module = None
    if module is None and path and os.path.exists(path):
        name = f"_mlflowkit_reproduce_{abs(hash(path))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    if module is None:
        raise RegistryError(
            f"run {run_id}: cannot import its pipeline {module_name}:{qualname} (file {path}). "
            f"Run mk.reproduce where that module can be imported (same folder or PYTHONPATH)."
        )
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise RegistryError(
                f"run {run_id}: module {module_name} has no pipeline {qualname!r} any more; "
                f"reproduce needs the code that made the run"
            )
    from mlflowkit.pipelines import Pipeline

    if not isinstance(obj, Pipeline):
        raise RegistryError(f"run {run_id}: {module_name}:{qualname} is not an mk.pipeline")
    return obj


def reproduce(run_id: str, store: Any = None, *, executor: Any = "local") -> Reproduction:
    """Re-execute a past run's step calls from scratch and compare every output digest.

    Parameters
    ----------
    run_id:
        The run (or a unique prefix of its id).
    store:
        The store holding the run: a ``Store``, a URL, or None for the default store.
    executor:
        Where to execute (as for ``Plan.run``).

    Raises
    ------
    RegistryError
        The record does not say how to plan the run again (made before runs kept it, or the
        pipeline cannot be imported), or its parameters no longer fit the pipeline.
    """
    import shutil
    import tempfile

    from mlflowkit.registry.pipeline import pinned
    from mlflowkit.registry.versions import resolve
    from mlflowkit.store import Store, open_store

    the_store = open_store(store)
    record = the_store.run(run_id)
    if not record.source:
        raise RegistryError(
            f"run {record.id} was recorded before run records kept the pipeline's import path, "
            f"so it cannot be planned again. Run the pipeline again with this version of "
            f"mlflowkit and reproduce that run."
        )
    pipeline = _import_pipeline(record.source, record.id)
    pins = {
        item["name"]: resolve(the_store, f"{item['name']}@{item['version']}")
        for item in record.consumed
    }
    try:
        with pinned(pins):
            plan = pipeline.plan(**record.params)
    except MlflowkitError as exc:
        raise RegistryError(
            f"run {record.id}: planning pipeline {record.pipeline!r} again with its recorded "
            f"parameters {record.params} failed: {exc}"
        ) from exc
    scratch = tempfile.mkdtemp(prefix="mlflowkit-reproduce-")
    try:
        with Store(scratch, durable=False) as fresh:
            for version in pins.values():
                fresh.put(the_store.get(version.digest), version.digest)
            try:
                run = plan.run(executor=executor, store=fresh, progress=False)
            except RunFailed as exc:
                run = exc.run
            new = {s.name: s for s in run.steps}
            differences: list[tuple[str, str, str | None]] = []
            compared: list[str] = []
            for s in record.steps:
                if s.internal or not s.output_digest or s.status not in ("executed", "cached"):
                    continue
                compared.append(s.name)
                now = new.get(s.name)
                got = now.output_digest if now is not None and now.status != "failed" else None
                if got != s.output_digest:
                    differences.append((s.name, s.output_digest, got))
            return Reproduction(record.id, not differences, differences, compared, run.id)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def reproduces(version: ArtifactVersion) -> tuple[bool, str]:
    """A gate that re-executes the version's producing run from scratch (``mk.reproduce``)
    and passes only if every step gives the recorded output digest again."""
    store = store_of(version)
    if version.run_id is None:
        return False, f"{version.spec} was published outside a run: there is nothing to re-run"
    result = reproduce(version.run_id, store)
    if result.matches:
        return True, f"run {version.run_id} reproduced: every output digest matches"
    steps = ", ".join(step for step, _, _ in result.differences)
    return False, f"run {version.run_id} did not reproduce: {steps} gave other outputs"
