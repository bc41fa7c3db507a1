"""Running and explaining plans: open the store and executor, walk, record, report.

Invariants
----------
* A run record is written when its first step starts executing (status ``running``) and
  again when it ends, so a crash leaves a trace; a run that executes nothing (all hits)
  writes only the final record. Cache entries written by finished steps survive any crash,
  and running again resumes from them.
* Every step that asks for a GPU is checked against the executor *before* anything runs.
* A failed step makes ``run_plan`` raise ``RunFailed`` chained to the step's own exception, with
  its (remote) traceback text in the message.
* A ``KeyboardInterrupt`` (Ctrl-C, or a step raising it, on any executor) stops the run at
  once: the executor drops what has not started (``finish(interrupted=True)``), steps still
  running are not waited for, the record is written with status ``interrupted``, and the
  ``KeyboardInterrupt`` is raised again. ``SystemExit`` and ``GeneratorExit`` raised by a step
  are step failures.
* When the OpenLineage client is configured (checked once per run, nothing imported
  otherwise), the run emits its lineage events: START as it starts, the step calls' events and
  COMPLETE/FAIL once its record is final (``mlflowkit.integrations.openlineage``).
* Every run ends with the executor's ``finish()`` (then ``shutdown()`` when the run made the
  executor; a background write it reports failing fails the run), so an executor kept between
  runs holds nothing it loaded for an earlier one.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

from blake3 import blake3

from mlflowkit._heap import set_aside
from mlflowkit.cache import Cache
from mlflowkit.errors import ExecutorError, RunFailed, StoreError, TypeCheckError, WiringError
from mlflowkit.executors import get as get_executor
from mlflowkit.executors.base import Executor, InMemory, TaskResult
from mlflowkit.integrations import lineage_emitter
from mlflowkit.interactive import wants_progress
from mlflowkit.keys import KeyMaker
from mlflowkit.outcomes import Progress
from mlflowkit.placeholders import leaves
from mlflowkit.plan import Ref
from mlflowkit.records import RunRecord
from mlflowkit.run import Run
from mlflowkit.scheduler import walk
from mlflowkit.wiring import check_value, describe, describe_value, mismatch, safe_repr

if TYPE_CHECKING:
    from mlflowkit.plan import TracedPlan as Plan
    from mlflowkit.store.base import ArtifactStore

__all__ = ["environment", "explain_plan", "new_run_id", "open_store", "run_plan"]


def new_run_id() -> str:
    """A time-sortable unique run id, e.g. ``20261129-060102-3fa2c1d9``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + os.urandom(4).hex()


def open_store(store: Any) -> ArtifactStore:
    """A store from a ``Store``, a URL, or None (``$MLFLOWKIT_STORE`` or ``./.mlflowkit``)."""
    from mlflowkit.store import open_store as _open

    return _open(store)


_GIT: dict[str, str | None] = {}


def _git_commit(cwd: str) -> str | None:
    """The commit checked out in the git work tree holding ``cwd``, read from ``.git``.

    Read directly (HEAD, then the loose ref or ``packed-refs``) rather than by starting a
    ``git`` process: it costs microseconds instead of milliseconds on every run.
    """
    if cwd in _GIT:
        return _GIT[cwd]
    commit = None
    folder = os.path.abspath(cwd)
    while True:
        dotgit = os.path.join(folder, ".git")
        if os.path.exists(dotgit):
            commit = _read_head(dotgit)
            break
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    _GIT[cwd] = commit
    return commit


def _read_head(dotgit: str) -> str | None:
    try:
        if os.path.isfile(dotgit):  # a worktree or submodule: "gitdir: <path>"
            with open(dotgit) as f:
                target = f.read().strip().removeprefix("gitdir:").strip()
            dotgit = os.path.join(os.path.dirname(dotgit), target)
        with open(os.path.join(dotgit, "HEAD")) as f:
            head = f.read().strip()
        if not head.startswith("ref:"):
            return head or None  # a detached HEAD holds the commit itself
        ref = head.removeprefix("ref:").strip()
        common = dotgit
        commondir = os.path.join(dotgit, "commondir")
        if os.path.exists(commondir):
            with open(commondir) as f:
                common = os.path.join(dotgit, f.read().strip())
        for base in (dotgit, common):
            loose = os.path.join(base, ref)
            if os.path.exists(loose):
                with open(loose) as f:
                    return f.read().strip() or None
        packed = os.path.join(common, "packed-refs")
        if os.path.exists(packed):
            with open(packed) as f:
                for line in f:
                    sha, _, name = line.strip().partition(" ")
                    if name == ref:
                        return sha
    except OSError:
        return None
    return None  # a branch without commits yet


#: the integers a record holds as JSON numbers (others are kept exactly another way)
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1

_IMPLEMENTATIONS = {"cpython": "CPython", "pypy": "PyPy"}  # as platform.python_implementation


@functools.cache
def _platform_text() -> str:
    """``Linux-6.1.0-x86_64``: like ``platform.platform()`` without its ``uname -p`` subprocess."""
    if hasattr(os, "uname"):
        u = os.uname()
        return f"{u.sysname}-{u.release}-{u.machine}"
    import platform  # Windows: no subprocess there

    return f"{platform.system()}-{platform.release()}-{platform.machine()}"


def environment(packages: dict[str, str]) -> dict[str, Any]:
    """What a run record keeps about where it ran."""
    from mlflowkit.version import __version__

    return {
        "python": sys.version.split()[0],
        "implementation": _IMPLEMENTATIONS.get(sys.implementation.name, sys.implementation.name),
        "platform": _platform_text(),
        "machine": _platform_text().rsplit("-", 1)[-1],
        "mlflowkit": __version__,
        "packages": dict(sorted(packages.items())),
        "git_commit": _git_commit(os.getcwd()),
        "argv": list(sys.argv),
    }


def _output_record(
    template: Any, digests: dict[str, str], store: ArtifactStore, depth: int = 0
) -> Any:
    """The pipeline's return structure as JSON that ``Run`` decodes back to equal types.

    Refs become ``{"$digest": d}``; tuples ``{"$tuple": [...]}``; dicts whose keys are not
    all plain strings ``{"$dict": [[k, v], ...]}``; other constants that JSON cannot hold
    exactly, and plain parts nested deeper than ``MAX_RECORD_DEPTH``, are stored as objects
    and referenced by digest.
    """
    if isinstance(template, Ref):
        digest = digests.get(template.node)
        return {"$digest": digest} if digest else None
    kind = type(template)
    if kind in (tuple, list, dict) and depth >= MAX_RECORD_DEPTH and not leaves(template, Ref):
        return {"$digest": store.put(template)}
    depth += 1
    if kind is tuple:
        return {"$tuple": [_output_record(v, digests, store, depth) for v in template]}
    if kind is list:
        return [_output_record(v, digests, store, depth) for v in template]
    if kind is dict:
        if all(type(k) is str and not k.startswith("$") for k in template):
            return {k: _output_record(v, digests, store, depth) for k, v in template.items()}
        return {
            "$dict": [
                [_output_record(k, digests, store, depth), _output_record(v, digests, store, depth)]
                for k, v in template.items()
            ]
        }
    if template is None or type(template) in (str, bool):
        return template
    if type(template) is int and _INT64_MIN <= template <= _UINT64_MAX:
        return template
    if type(template) is float and math.isfinite(template):
        return template
    return {"$digest": store.put(template)}


def _check_placement(plan: Plan, executor: Executor) -> None:
    gpus = executor.capabilities.gpus
    for node in plan.nodes.values():
        wanted = node.step.hints.gpus
        if wanted > 0 and wanted > gpus:
            raise ExecutorError(
                f"Step {node.name!r} asks for resources={dict(node.step.hints.resources)}, "
                f"but the {executor.name!r} executor offers {gpus} GPU(s). Nothing was run. "
                f"Fix: run with executor='gpu' (pip install 'mlflowkit[gpu]' on a machine with "
                f"a CUDA GPU) or on a Dask cluster whose workers declare a 'gpu' resource; or "
                f"remove the resources hint to run it on the CPU.",
                executor=executor.name,
                step=node.name,
            )


def _warn_unenforced_timeouts(plan: Plan, executor: Executor) -> None:
    """Say so when steps ask for ``timeout=`` on an executor that cannot stop a running step."""
    if executor.capabilities.can_timeout:
        return
    timed = sorted({n.step.name for n in plan.nodes.values() if n.step.hints.timeout is not None})
    if timed:
        warnings.warn(
            f"Step(s) {', '.join(map(repr, timed))} set timeout=, but the {executor.name!r} "
            f"executor cannot stop a running step: the timeout is not enforced in this run. "
            f"Run with executor='processes' or 'dask' to enforce it.",
            UserWarning,
            stacklevel=4,  # the caller of Plan.run
        )


def _progress(progress: bool | None) -> Progress:
    if not wants_progress(progress):
        return Progress()  # nobody watches: the display code is not even imported
    from mlflowkit.display import make_progress

    return make_progress(progress)


def run_plan(
    plan: Plan,
    executor: Any = "local",
    store: Any = None,
    *,
    max_workers: int | None = None,
    progress: bool | None = None,
    force: bool | list[str] = False,
) -> Run:
    """Execute ``plan`` on ``executor`` with ``store``; see ``Plan.run``.

    An executor given by name is started and shut down here, and the run returns only once
    its background work (e.g. the gpu executor's store writes) is done. An ``Executor``
    instance belongs to the caller: it is started but not shut down, and background work may
    still be going on when the run returns; call its ``wait()`` (or ``shutdown()``) to be sure.
    """
    with set_aside():  # the heap that existed before the run is left out of GC passes
        return _run_plan(plan, executor, store, max_workers, progress, force)


def _run_plan(
    plan: Plan,
    executor: Any,
    store: Any,
    max_workers: int | None,
    progress: bool | None,
    force: bool | list[str],
) -> Run:
    the_store = open_store(store)
    with the_store.batched():  # small writes group-committed, written before the record
        return _run_on(plan, executor, the_store, max_workers, progress, force)


def _run_on(
    plan: Plan,
    executor: Any,
    the_store: ArtifactStore,
    max_workers: int | None,
    progress: bool | None,
    force: bool | list[str],
) -> Run:
    the_store.create()  # lay it out: errors about the place come before any work
    if isinstance(executor, Executor):
        ex = executor
        owned = False
    else:
        options: dict[str, Any] = {}
        if max_workers is not None:
            options["max_workers"] = max_workers
        ex = get_executor(executor, **options)
        owned = True
    if isinstance(force, (list, tuple, set)):
        unknown = [f for f in force if f not in plan.nodes]
        if unknown:
            import difflib

            close = [
                f"{match[0]!r} instead of {name!r}"
                for name in unknown
                if (match := difflib.get_close_matches(name, plan.steps, n=1))
            ]
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise WiringError(
                f"force= names step calls that are not in the plan: {unknown}.{hint} The plan "
                f"has {plan.steps}.",
                parameter="force",
            )
        force_set: bool | set[str] = set(force)
    else:
        force_set = bool(force)
    run_id = new_run_id()
    record = RunRecord(
        id=run_id,
        pipeline=plan.pipeline,
        params={k: _jsonable(v) for k, v in plan.params.items()},
        started_at=time.time(),
        executor=ex.name,
    )
    lineage = lineage_emitter(plan, the_store, record)  # None unless OpenLineage is set up
    if lineage is not None:
        lineage.started()
    keys = KeyMaker()
    if plan.publishes:  # named artifacts: AccessDenied before anything is executed or written
        from mlflowkit.registry.pipeline import check_publish

        check_publish(plan, the_store)
    if plan.consumes:  # named artifacts: answered from the store, never re-executed
        from mlflowkit.registry.pipeline import consumed_record, prepare

        prepare(plan, the_store, keys)
        record.consumed = consumed_record(plan)
        if force_set is True:
            force_set = set(plan.nodes)
        if isinstance(force_set, set):
            force_set -= set(plan.consumes)
    if plan.source:
        record.source = plan.source
    pack_name = _pack_name(plan)
    # the last run's entries, read in one go (a forced run reads none: it executes all)
    cache = Cache.open(the_store, pack_name if force_set is not True else None)
    ex.start(the_store)
    background_error: BaseException | None = None
    stopped = True  # until the walk returns: an error of mlflowkit itself stops the run early
    try:
        _check_placement(plan, ex)
        _warn_unenforced_timeouts(plan, ex)
        result = walk(
            plan.nodes,
            plan.output_nodes(),
            ex,
            cache,
            run_id=run_id,
            force=force_set,
            progress=_progress(progress),
            keys=keys,
            on_first_task=lambda: the_store.put_run(record),  # a trace should the run crash
        )
        stopped = result.interrupted is not None
    finally:
        try:
            # the executor lets go of what it kept for this run; stopped: it drops what has not
            # started, and running steps are not waited for
            ex.finish(interrupted=stopped)
        finally:
            if owned:
                # background writes are done before the run is called finished; an executor
                # instance passed in belongs to the caller, who shuts it down
                try:
                    ex.shutdown()
                except Exception as exc:
                    background_error = exc
    if background_error is not None and result.failure is None:
        result.failure = TaskResult("<background write>", False, attempts=0, error=background_error)
    record.steps = result.take_steps(_read_after_walk(plan))
    record.finished_at = time.time()
    if result.interrupted is not None:
        record.status = "interrupted"
        record.environment = environment(result.packages)
        record.output = _output_record(plan.output, result.digests, the_store)
        the_store.put_run(record)
        raise result.interrupted  # Ctrl-C stops the caller too, as it would without mlflowkit
    # only the outputs' values: the run must not keep every intermediate value alive
    values = {
        name: handle.value
        for name in plan.output_nodes()
        if isinstance(handle := result.handles.get(name), InMemory)
    }
    run = Run(record, the_store, plan.output, values)
    output_error = (
        _check_returned(plan, run) if result.failure is None and plan.check_returns else None
    )
    failed = result.failure is not None or output_error is not None
    record.status = "failed" if failed else "succeeded"
    record.environment = environment(result.packages)
    try:
        record.output = _output_record(plan.output, result.digests, the_store)
        if plan.publishes and not failed:  # versions only for a run that succeeded
            from mlflowkit.registry.pipeline import git_clean, publish_results

            published, made = publish_results(
                plan, result.digests, result.handles, the_store, run_id, run.metrics
            )
            run._published = published
            record.published = [
                {"name": v.name, "version": v.version, "digest": v.digest}
                for v in published.values()
            ]
            if made and record.environment.get("git_commit"):
                record.environment["git_clean"] = git_clean()
        the_store.put_run(record)
    except StoreError as exc:  # e.g. disk full: never hide the run's own failure behind it
        if not failed:
            raise
        record_error: StoreError | None = exc
    else:
        record_error = None
    if lineage is not None and record_error is None:
        lineage.finished(record)
    if record_error is None and result.failure is None:
        cache.save(pack_name)  # the entries this run used, when they changed
    unrecorded = (
        f" The run record could not be written either ({record_error})."
        if record_error is not None
        else ""
    )
    if output_error is not None:
        raise RunFailed(
            f"Run {run_id} of pipeline {plan.pipeline!r} failed: {output_error} Its steps "
            f"finished and are cached.{unrecorded}",
            run=run,
        ) from output_error
    if result.failure is not None:
        failure = result.failure
        # name the step whose exception is chained: the first failure that arrived
        name = failure.name
        err = failure.error
        text = f"{type(err).__name__}: {err}".rstrip(". ") if err is not None else "unknown error"
        tb = (
            f"\n\nTraceback of the step (where it ran):\n{failure.traceback}"
            if failure.traceback
            else ""
        )
        raise RunFailed(
            f"Run {run_id} of pipeline {plan.pipeline!r} failed at step {name!r}: {text}. "
            f"Finished steps are cached; fix the step and run again to resume.{unrecorded}{tb}",
            run=run,
            step=name,
        ) from err
    return run


def _read_after_walk(plan: Plan) -> set[str]:
    """The nodes whose digests and values a run reads once its walk is over: the outputs and
    the values it publishes."""
    names = set(plan.output_nodes())
    for published in plan.publishes:
        names.update(ref.node for ref in leaves(published.value, Ref))
    return names


def _check_returned(plan: Plan, run: Run) -> TypeCheckError | None:
    """The output value checked against the pipeline's return annotation (when planning could
    not decide it); the error to raise, or None when it fits."""
    value = run.output
    if check_value(value, plan.returns):
        return None
    return TypeCheckError(
        f"Pipeline {plan.pipeline!r} returned {describe_value(value)}, but its return "
        f"annotation says {describe(plan.returns)}{mismatch(value, plan.returns)}. Fix what "
        f"the pipeline returns, or its annotation."
    )


def _pack_name(plan: Plan) -> str:
    """The cache pack of a pipeline: one per pipeline and plan size (cheap to tell apart)."""
    return "p-" + blake3(f"{plan.pipeline}\n{len(plan.nodes)}".encode()).digest().hex()[:40]


#: Containers nested deeper than this in a parameter are shown as a short text in the record.
MAX_RECORD_DEPTH = 64


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A parameter as the run record shows it: JSON as is, anything else by its ``repr``.

    Never raises: a value whose ``repr`` fails (an int beyond Python's digit limit, a raising
    ``__repr__``) is described, and containers deeper than ``MAX_RECORD_DEPTH`` are cut.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int) and _INT64_MIN <= value <= _UINT64_MAX:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, (list, tuple, dict)) and depth >= MAX_RECORD_DEPTH:
        return f"<{type(value).__name__} nested more than {MAX_RECORD_DEPTH} levels deep>"
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {_key_text(k): _jsonable(v, depth + 1) for k, v in value.items()}
    return safe_repr(value)


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    try:
        return str(key)
    except Exception:
        return safe_repr(key)


def explain_plan(plan: Plan, store: Any = None) -> list[dict[str, Any]]:
    """Per step call: ``hit``/``execute`` and why, compared with the last run of that step."""
    from mlflowkit.explain import explain

    return explain(plan, open_store(store), KeyMaker())
