"""The scheduler: one thread walking a plan's graph, fed by completion events.

Invariants
----------
* All scheduling state lives in one ``_Walk`` object on the calling thread; executors only
  ever put ``TaskResult``\\ s on its queue (through ``on_done``) — they never touch the state.
* A node is processed once all its dependencies finished; its key is computed from their
  *content* digests. Hit → its output is a handle (nothing is loaded). Miss → one task.
* A key reached twice in one run executes once; the second call waits for the first.
* After the first failure nothing new is submitted; tasks in flight finish; the rest are
  ``skipped``. A corrupt or missing stored input makes its producer re-execute, then the
  consumer retries.
* A ``KeyboardInterrupt`` (Ctrl-C in this thread, or a step's result carrying one) ends the
  walk at once, without waiting for tasks in flight: the result says ``interrupted``, and
  whatever did not finish is ``skipped``.
* Hits come from the pack the driver read (the last run's entries) or the store; a pack hit's
  stored value is checked to exist only for the plan's outputs (what the caller loads).
* A step call's record carries the metric log of the execution that produced its output: the
  one that just ran, or, for a hit, the one whose cache entry it reuses (``records.METRICS``).
* The scheduler does no I/O of its own: it talks to the store and the executor through their
  contracts only, and imports neither a concrete executor nor a concrete store.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mlflowkit.errors import (
    CorruptObjectError,
    ExecutorError,
    HashingError,
    MissingObjectError,
    MlflowkitError,
)
from mlflowkit.executors.base import Derived, Input, Stored, Task, TaskResult
from mlflowkit.hashing import hash_value
from mlflowkit.keys import KeyMaker
from mlflowkit.placeholders import SCALARS, leaves, map_leaves
from mlflowkit.plan import OPS as _OPS
from mlflowkit.plan import Node, Ref, find_refs
from mlflowkit.records import METRICS, CacheEntry, StepRun

if TYPE_CHECKING:
    from mlflowkit.executors.base import Executor
    from mlflowkit.store.base import ArtifactStore

__all__ = ["Progress", "WalkResult", "walk"]


class Progress:
    """Receives progress events; the default does nothing (``display.py`` draws bars)."""

    def start(self, total: int) -> None:
        """A run with ``total`` step calls starts."""

    def grow(self, extra: int) -> None:
        """A run-time fan-out added ``extra`` step calls."""

    def advance(self, name: str, status: str) -> None:
        """Step call ``name`` ended with ``status``."""

    def finish(self) -> None:
        """The run ended."""


@dataclass
class WalkResult:
    """Outcome of walking a plan: per-node records, digests and value handles."""

    records: dict[str, StepRun]
    order: list[str]
    digests: dict[str, str]
    handles: dict[str, Any]
    failure: TaskResult | None
    packages: dict[str, str]
    #: the cache entries this run hit or wrote, by key (what the next run reads as its pack)
    entries: dict[str, CacheEntry]
    #: the ``KeyboardInterrupt`` that stopped the walk, if one did
    interrupted: KeyboardInterrupt | None = None


_GETITEM = _OPS["getitem"]
_GATHER = _OPS["gather"]


def _packed(node: Node, entry: CacheEntry) -> CacheEntry:
    """``entry`` as this run's pack keeps it: a gather's without its item digests.

    Those are the digests of the values it collects, which every run reaching the gather
    knows already (``_Walk._items``); kept, they would make the pack of a wide fan-out grow
    by ~75 bytes per element, read again on every run.
    """
    if node.step is not _GATHER or "items" not in entry.meta:
        return entry
    meta = {k: v for k, v in entry.meta.items() if k != "items"}
    return replace(entry, meta=meta)


def _to_input(template: Any, digests: dict[str, str], handles: dict[str, Any]) -> Any:
    """Replace each Ref in a template by an ``Input`` carrying its digest and handle."""

    def make(ref: Ref[Any]) -> Input:
        node = ref._node
        return Input(node, digests[node], handles[node])

    if type(template) is dict:  # the arguments of a call: most are a Ref or a plain scalar
        return {
            name: make(value)
            if type(value) is Ref
            else value
            if type(value) in SCALARS
            else map_leaves(value, Ref, make)
            for name, value in template.items()
        }
    return map_leaves(template, Ref, make)


def _nested_upstream(args: dict[str, Any]) -> dict[str, list[str]]:
    """Digests of the upstream values nested in structures, per parameter (for lineage)."""
    out: dict[str, list[str]] = {}
    for pname, template in args.items():
        if type(template) is Input or type(template) in SCALARS:
            continue
        found = leaves(template, Input)
        if found:
            out[pname] = [item.digest for item in found]
    return out


class _Walk:
    def __init__(
        self,
        nodes: dict[str, Node],
        executor: Executor,
        store: ArtifactStore | None,
        run_id: str,
        force: bool | set[str],
        progress: Progress,
        keys: KeyMaker,
    ) -> None:
        self.nodes = dict(nodes)
        self.order = list(nodes)
        self.executor = executor
        self.store = store
        self.run_id = run_id
        self.force = force
        self.progress = progress
        self.keys = keys
        self.events: queue.SimpleQueue[TaskResult] = queue.SimpleQueue()
        self.remaining: dict[str, int] = {}
        # node -> the nodes waiting for it; a node nobody waits for has no entry
        self.dependents: dict[str, list[str]] = {}
        self.digests: dict[str, str] = {}
        self.handles: dict[str, Any] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.records: dict[str, StepRun] = {}
        self.ready: deque[str] = deque()
        self.inflight: dict[str, str] = {}  # node -> key
        self.by_key: dict[str, str] = {}  # key in flight -> node executing it
        self.key_waiters: dict[str, list[str]] = {}
        self.rerun_waiters: dict[str, list[str]] = {}
        self.failure: TaskResult | None = None
        self.packages: dict[str, str] = {}
        self.const_digests: dict[tuple[str, str], str] = {}
        self.pack: dict[str, CacheEntry] = {}  # entries read in one go, checked before use
        self.entries: dict[str, CacheEntry] = {}
        self.writes: dict[str, bool] = {}  # node -> whether its task stores the value
        self.on_first_task: Callable[[], None] | None = None
        self.shows_progress = type(progress) is not Progress  # the base class does nothing
        remaining, dependents, ready = self.remaining, self.dependents, self.ready
        for name, node in nodes.items():
            deps = node.deps
            remaining[name] = len(deps)
            if deps:
                for dep in deps:
                    waiting = dependents.get(dep)
                    if waiting is None:
                        dependents[dep] = [name]
                    else:
                        waiting.append(name)
            else:
                ready.append(name)

    # ------------------------------------------------------------------------------------
    def run(self) -> WalkResult:
        on_done = self.events.put
        interrupted: KeyboardInterrupt | None = None
        try:
            while True:
                while self.ready and self.failure is None:
                    self._process(self.ready.popleft(), on_done)
                if not self.inflight:
                    break
                if self.events.empty():
                    self.executor.flush()
                self._finish(self.events.get())
        except KeyboardInterrupt as exc:  # Ctrl-C, or a step raised it: stop now
            interrupted = exc
            for name in self.inflight:  # still running: not waited for
                self.records[name].status = "skipped"
        for name in self.order:
            if name not in self.records:
                node = self.nodes[name]
                self.records[name] = StepRun(
                    name=name, status="skipped", step=node.step.qualified_name
                )
                self._advance(name, "skipped")
        return WalkResult(
            self.records,
            self.order,
            self.digests,
            self.handles,
            self.failure,
            self.packages,
            self.entries,
            interrupted,
        )

    def _advance(self, name: str, status: str) -> None:
        """Tell the progress display that a step call ended; internal nodes (``ref[i]``,
        ``ref.attr``, gathers) are not step calls and are not counted, as everywhere else."""
        if self.shows_progress and self.nodes[name].kind != "derived":
            self.progress.advance(name, status)

    def _forced(self, name: str) -> bool:
        return self.force is True or (isinstance(self.force, set) and name in self.force)

    def _process(self, name: str, on_done: Callable[[TaskResult], None]) -> None:
        node = self.nodes[name]
        kind = node.kind
        if kind == "map":
            self._expand(node)
            return
        step = node.step
        args = _to_input(node.args, self.digests, self.handles) if node.deps else node.args
        if (
            kind == "derived"
            and step is _GETITEM
            and not node.persist  # a returned item goes through a task, which stores it
            and self._item(name, node, args)
        ):
            return
        try:
            inputs, key, code, nested = self._key(name, node, args)
        except MlflowkitError as exc:  # an unhashable input, unreadable code: fail this call
            self.records[name] = StepRun(name=name, step=step.qualified_name)
            self._fail(name, TaskResult(name, False, attempts=0, error=exc))
            return
        record = StepRun(
            name, key, "skipped", 0, 0.0, None, None, step._qualified_name, code, inputs
        )
        if nested:  # a structure that may hold upstream values: lineage lists them
            record.upstream = _nested_upstream(args)
        self.records[name] = record
        cacheable = step.identity.cache and self.store is not None
        forced = cacheable and self._forced(name)
        if cacheable and not forced:
            entry = self._lookup(name, key)
            if entry is not None:
                record.status = "cached"
                record.output_digest = entry.output_digest
                record.metric_log = entry.meta.get(METRICS)  # those of the execution reused
                self.digests[name] = entry.output_digest
                self.meta[name] = entry.meta
                self.handles[name] = (
                    Stored(entry.output_digest) if entry.stored else Derived(step, args)
                )
                self._advance(name, "cached")
                self._complete(name)
                return
        if key in self.by_key:  # the same call is already executing in this run
            self.key_waiters.setdefault(key, []).append(name)
            return
        persist = node.persist and self.store is not None
        store_value = persist and (step.identity.cache or name in self._outputs)
        task = Task(
            name,
            step,
            key,
            self.run_id,
            args,
            store_value,
            cacheable,
            cacheable and kind == "step" and not forced,  # single flight
            node.checks,
        )
        if cacheable:
            self.writes[name] = store_value
        if self.on_first_task is not None:  # e.g. the driver records that the run is running
            first, self.on_first_task = self.on_first_task, None
            first()
        try:
            # an executor that runs this call in this thread anyway does it now: no round trip
            result = self.executor.run_here(task)
            if result is None:
                record.started_at = time.time()  # until the result says when it started
                self.inflight[name] = key
                self.by_key[key] = name
                self.executor.submit(task, on_done)
        except Exception as exc:  # the executor refused the task (e.g. no GPU for it)
            self.inflight.pop(name, None)
            self.by_key.pop(key, None)
            self._fail(name, TaskResult(name, False, attempts=0, error=exc))
            return
        if result is not None:
            self._done(name, key, result)

    def _lookup(self, name: str, key: str) -> CacheEntry | None:
        """The cache entry for ``key``, from the pack when it lists it.

        A pack entry's stored output is checked to exist only for the plan's outputs (the
        values the caller will load); any other one that turns out to be gone when a step
        needs it makes its producer execute again (``_heal``).
        """
        store = self.store
        assert store is not None
        entry = self.pack.get(key)
        if (
            entry is not None
            and entry.stored
            and name in self._outputs
            and not store.has(entry.output_digest)
        ):
            entry = None
        if entry is None:
            entry = store.get_cache(key)
        if entry is not None:
            self.entries[key] = _packed(self.nodes[name], entry)
        return entry

    def _item(self, name: str, node: Node, args: dict[str, Any]) -> bool:
        """Answer ``parent[i]`` from the item digests the parent reported; True if done.

        No task and no cache entry: the item's digest is known, and its value is a cheap
        ``Derived`` view of the parent's, resolved only by a step that executes.
        """
        parent = node.deps[0]
        index = node.args.get("key")
        items = self._items(parent)
        if items is None or type(index) is not int or not -len(items) <= index < len(items):
            return False
        digest, length = items[index]
        if digest is None:
            return False
        inputs, key, code, _ = self._key(name, node, args)
        cached = self.records[parent].status == "cached"
        self.records[name] = StepRun(
            name=name,
            key=key,
            step=node.step.qualified_name,
            status="cached" if cached else "executed",
            attempts=0 if cached else 1,
            output_digest=digest,
            code_digest=code,
            inputs=inputs,
        )
        self.digests[name] = digest
        self.handles[name] = Derived(node.step, args)
        self.meta[name] = {} if length is None else {"len": length}
        self._complete(name)
        return True

    def _items(self, name: str) -> list[list[Any]] | None:
        """``[digest, length]`` of each item of node ``name``'s output (a list), if known.

        From what the producer reported, or for a gather, from the values it collected.
        """
        items: list[list[Any]] | None = self.meta.get(name, {}).get("items")
        node = self.nodes[name]
        if items is None and node.step is _GATHER:
            meta, digests = self.meta, self.digests
            items = [[digests[d], meta.get(d, {}).get("len")] for d in node.deps]
        return items

    def _key(
        self, name: str, node: Node, args: dict[str, Any]
    ) -> tuple[dict[str, str], str, str, bool]:
        """Input digests, cache key and code digest of one step call, and whether an argument
        is a structure (which may hold upstream values)."""
        step = node.step
        inputs: dict[str, str] = {}
        nested = False
        for pname, template in args.items():
            if type(template) is Input:
                inputs[pname] = template.digest
            elif type(template) in SCALARS:  # cheap to hash: no memo
                inputs[pname] = hash_value(template)
            else:
                nested = True
                memo = (name, pname)
                digest = self.const_digests.get(memo)
                if digest is None:
                    try:
                        digest = self.keys.input_digest(template)
                    except HashingError as exc:  # say which step call and parameter
                        raise HashingError(
                            f"Step {name!r}, parameter {pname!r} (at {node.location}): {exc}",
                            type_name=exc.type_name,
                        ) from exc
                    if not node.deps or not find_refs(node.args[pname]):
                        self.const_digests[memo] = digest
                inputs[pname] = digest
        key, code, packages = self.keys.key_and_code(step, inputs)
        if packages:
            self.packages.update(packages)
        node.key = key
        return inputs, key, code, nested

    _outputs: frozenset[str] = frozenset()

    def _finish(self, result: TaskResult) -> None:
        """A submitted task ended."""
        name = result.name
        key = self.inflight.pop(name)
        self.by_key.pop(key, None)
        self._done(name, key, result)

    def _done(self, name: str, key: str, result: TaskResult) -> None:
        """Record how the call ``name`` (with ``key``) ended and release what waits on it."""
        record = self.records[name]
        record.attempts = result.attempts
        record.duration_s = result.duration_s
        if result.started_at:
            record.started_at = result.started_at
        if not result.ok:
            err = result.error
            if isinstance(err, (CorruptObjectError, MissingObjectError)) and self._heal(name, err):
                return
            self._fail(name, result)
            if isinstance(err, KeyboardInterrupt):  # the step was interrupted: so is the run
                raise err
            for waiter in self.key_waiters.pop(key, ()) if self.key_waiters else ():
                self._fail(waiter, result)
            return
        assert result.output_digest is not None
        stored = self.writes.pop(name, None)
        if stored is not None and not result.cached:  # the task wrote this entry
            self.entries[key] = _packed(
                self.nodes[name],
                CacheEntry(
                    key=key,
                    output_digest=result.output_digest,
                    step=record.step,
                    stored=stored,
                    meta=result.meta,
                    run_id=self.run_id,
                ),
            )
        record.status = status = "cached" if result.cached else "executed"
        record.output_digest = digest = result.output_digest
        record.metric_log = metric_log = result.meta.get(METRICS)
        self.digests[name] = digest
        self.handles[name] = result.value
        self.meta[name] = result.meta
        if self.shows_progress:
            self._advance(name, status)
        self._complete(name)
        for waiter in self.key_waiters.pop(key, ()) if self.key_waiters else ():
            wrec = self.records[waiter]
            wrec.status = "cached"
            wrec.output_digest = result.output_digest
            wrec.metric_log = metric_log
            self.digests[waiter] = result.output_digest
            self.handles[waiter] = result.value
            self.meta[waiter] = result.meta
            self._advance(waiter, "cached")
            self._complete(waiter)

    def _fail(self, name: str, result: TaskResult) -> None:
        record = self.records[name]
        record.status = "failed"
        record.attempts = result.attempts
        err = result.error
        record.error = f"{type(err).__name__}: {err}" if err is not None else "failed"
        record.traceback = result.traceback
        self._advance(name, "failed")
        if self.failure is None:
            self.failure = result

    def _complete(self, name: str) -> None:
        waiters = self.rerun_waiters.pop(name, None) if self.rerun_waiters else None
        remaining = self.remaining
        for dep in waiters if waiters is not None else self.dependents.get(name, ()):
            left = remaining[dep] = remaining[dep] - 1
            if left == 0:
                self.ready.append(dep)

    def _heal(self, consumer: str, error: CorruptObjectError | MissingObjectError) -> bool:
        """A stored input was corrupt or gone: re-execute its producer(s), retry ``consumer``.

        The producer is a direct upstream of ``consumer`` or, for a derived input such as an
        item of a cached list, any cached step call whose output has that digest.
        """

        def cached_with_digest(names: Iterable[str]) -> list[str]:
            return [
                n
                for n in names
                if self.digests.get(n) == error.digest
                and (record := self.records.get(n)) is not None
                and record.status == "cached"
            ]

        producers = cached_with_digest(self.nodes[consumer].deps) or cached_with_digest(
            [n for n in self.order if self.nodes[n].kind == "step"]
        )
        if not producers or self.store is None:
            return False
        for producer in producers:
            key = self.records[producer].key
            if key is not None:
                self.store.drop_cache(key)
                self.pack.pop(key, None)
                self.entries.pop(key, None)
            self.force = (
                self.force
                if self.force is True
                else (set(self.force) if isinstance(self.force, set) else set()) | {producer}
            )
            self.rerun_waiters.setdefault(producer, []).append(consumer)
            self.remaining[consumer] += 1
            self.ready.append(producer)
        del self.records[consumer]
        return True

    def _expand(self, node: Node) -> None:
        """Fan out a ``map`` node now that the lists it maps over are known."""
        lengths: dict[str, int] = {}
        fan = node.fan or {}
        for pname, source in fan.items():
            if isinstance(source, Ref):
                meta = self.meta.get(source.node, {})
                if "len" not in meta:
                    err = ExecutorError(
                        f"Step {node.name!r} maps over the output of {source.node!r}, which is "
                        f"not a list or tuple (no length was reported). Return a list from "
                        f"{source.node!r}.",
                        step=node.name,
                    )
                    self.records[node.name] = StepRun(name=node.name, step=node.step.qualified_name)
                    self._fail(node.name, TaskResult(node.name, False, attempts=0, error=err))
                    return
                lengths[pname] = int(meta["len"])
            else:
                lengths[pname] = len(source)
        if len(set(lengths.values())) > 1:
            err = ExecutorError(
                f"Step {node.name!r} maps over lists of different lengths {lengths}: expected "
                f"equal lengths to zip them. Make the inputs the same length.",
                step=node.name,
            )
            self.records[node.name] = StepRun(name=node.name, step=node.step.qualified_name)
            self._fail(node.name, TaskResult(node.name, False, attempts=0, error=err))
            return
        n = next(iter(lengths.values())) if lengths else 0
        new: list[Node] = []
        elems: list[Ref[Any]] = []
        for i in range(n):
            args: dict[str, Any] = {}
            for pname, value in node.args.items():
                if pname not in fan:
                    args[pname] = value
                elif isinstance(value, Ref):
                    item_name = f"{value.node}.{i}"
                    if item_name not in self.nodes:
                        item = Node(
                            item_name,
                            _GETITEM,
                            "derived",
                            {"obj": value, "key": i},
                            (value.node,),
                            Any,
                            node.location,
                            persist=False,
                        )
                        new.append(item)
                        self.nodes[item_name] = item
                    args[pname] = Ref(item_name, Any, None)  # type: ignore[arg-type]
                else:
                    args[pname] = value[i]
            deps = tuple(dict.fromkeys(r.node for r in find_refs(args)))
            elem = Node(
                f"{node.name}[{i}]",
                node.step,
                "step",
                args,
                deps,
                Any,
                node.location,
                checks=node.checks,
            )
            new.append(elem)
            self.nodes[elem.name] = elem
            elems.append(Ref(elem.name, Any, None))  # type: ignore[arg-type]
        gather = Node(
            node.name,
            _OPS["gather"],
            "derived",
            {"items": tuple(elems)},
            tuple(e.node for e in elems),
            node.out_type,
            node.location,
            persist=node.persist,
        )
        self.nodes[node.name] = gather
        position = self.order.index(node.name)
        self.order[position:position] = [m.name for m in new]
        # the elements replace the one call the fan-out was counted as (items are internal)
        self.progress.grow(sum(m.kind == "step" for m in new) - 1)
        for m in new:
            self.remaining[m.name] = sum(
                1 for d in m.deps if d not in self.digests or d in self.inflight
            )
            for dep in m.deps:
                self.dependents.setdefault(dep, []).append(m.name)
        # the gather waits for the elements it collects
        self.remaining[node.name] = len(gather.deps)
        for elem_name in gather.deps:
            self.dependents.setdefault(elem_name, []).append(node.name)
        for m in new:
            if self.remaining[m.name] == 0:
                self.ready.append(m.name)
        if not gather.deps:
            self.ready.append(node.name)


def walk(
    nodes: dict[str, Node],
    outputs: list[str],
    executor: Executor,
    store: ArtifactStore | None,
    *,
    run_id: str,
    force: bool | set[str] = False,
    progress: Progress | None = None,
    keys: KeyMaker | None = None,
    pack: dict[str, CacheEntry] | None = None,
    on_first_task: Callable[[], None] | None = None,
) -> WalkResult:
    """Walk the graph of ``nodes``, executing misses on ``executor``; see module docstring.

    ``pack`` holds cache entries read in one go (the last run's); see ``_lookup``.
    ``on_first_task`` is called once, just before the first task is submitted (never when
    everything is a hit).
    """
    state = _Walk(nodes, executor, store, run_id, force, progress or Progress(), keys or KeyMaker())
    state._outputs = frozenset(outputs)
    state.pack = pack or {}
    state.on_first_task = on_first_task
    state.progress.start(sum(n.kind != "derived" for n in nodes.values()))
    try:
        return state.run()
    finally:
        state.progress.finish()
