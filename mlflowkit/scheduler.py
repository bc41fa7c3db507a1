"""The scheduler: one thread walking a plan's graph, fed by completion events.

A small state machine in the spirit of ``dask.local.get_async``. Each node of the graph is in
one state at a time:

``waiting``
    ``waiting[name]`` counts its dependencies not done yet (a node is released by the last one;
    a node with none left has no entry).
``ready``
    in the ``ready`` queue: all its dependencies are done; nothing is known about it yet.
``running``
    ``running[name]`` is its ``Task``, handed to the executor; its result comes back on
    ``events`` (put there by the executor, from any thread) or, for ``run_here``, at once.
``done``
    it has a record in ``records``; when it succeeded, ``digests``/``handles``/``meta`` hold
    its output's content digest, value handle and small facts (length, item digests).

Processing a ready node takes one of four routes, each one mechanism:

* **answer** without a task — a cache hit (``Cache.lookup``: the pack, then the store), or an
  item ``parent[i]`` whose digest its parent reported (``_item``); both end in ``_settle``.
* **expand** a run-time fan-out (``map``) once the lists it maps over are known: its elements,
  their items and a gather replace it in the graph (``_expand``).
* **execute** — one ``Task``, run by the executor now (``run_here``) or later (``submit``);
  a second node with a key already running waits for it (``flights``: single flight inside a
  run; ``Cache.claim`` does it across runs) and is settled with its result as *cached*.
* **rehearse** — in a dry run (``Rehearsal``, used by ``explain``) the walk is the same, but a
  node that would execute is not: it is recorded with the reason, and is done without a
  digest (``unknown``), so that its dependents are reported as waiting on it.

and ends in one of two: ``_settle`` (done, with a value) or ``_fail``.

Invariants
----------
* All scheduling state lives in one ``_Walk`` object on the calling thread; executors only
  ever put ``TaskResult``\\ s on its queue (through ``on_done``) — they never touch the state.
* A node is processed once all its dependencies are done; its key is computed from their
  *content* digests. Hit → its output is a handle (nothing is loaded). Miss → one task.
* A key reached twice in one run executes once; the second call waits for the first.
* After the first failure nothing new is submitted; tasks in flight finish; the rest are
  ``skipped``. A corrupt or missing stored input makes its producer re-execute (its cache
  entry is ``forget``-ten), then the consumer retries (``retry``: the consumer waits for the
  producer again, instead of the producer's other dependents).
* A ``KeyboardInterrupt`` (Ctrl-C in this thread, or a step's result carrying one) ends the
  walk at once, without waiting for tasks in flight: the result says ``interrupted``, and
  whatever did not finish is ``skipped``.
* Calls ready together are looked up together: ``_prefetch`` computes the keys of up to
  ``PREFETCH_AT_ONCE`` ready step calls and asks the cache for them at once (one store query
  for a fan-out); each is then processed as any other, with its key computed once. When the
  executor runs tasks in this process in the order given (``ordered``), the misses' locks
  are taken there too, all or none (``Cache.prefetch(hold=True)``): a call whose lock is held
  so is not claimed again by its task, and ``_done`` lets go of it (the store keeps it until
  the entry is written); the walk lets go of any left when it ends.
* At most ``IN_FLIGHT`` tasks are handed to the executor and not finished. Once that many are,
  the walk takes results until half of them finished, then hands out more: what the driver
  holds per task (the task, its arguments, an executor's payload) is bounded by the window,
  not by the width of a fan-out, and refilling by halves keeps an executor's batches large.
* A pack hit's stored value is checked to exist only for the plan's outputs (what the caller
  loads): ``Cache.lookup(check=...)``.
* A step call's record carries the metric log of the execution that produced its output: the
  one that just ran, or, for a hit, the one whose cache entry it reuses (``records.METRICS``).
* What a walk keeps per node is what a later decision reads: a node's list of ``dependents``
  goes once it released them, and ``meta`` is kept only when there is something in it (most
  outputs report nothing). The plan's nodes are copied only when a fan-out adds to them.
* The scheduler does no I/O of its own: it talks to the cache (``mlflowkit.cache.Cache``) and
  the executor through their contracts only, and imports neither a concrete executor nor a
  concrete store.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable, Iterable
from itertools import islice
from typing import TYPE_CHECKING, Any

from mlflowkit.errors import (
    CorruptObjectError,
    ExecutorError,
    MissingObjectError,
    MlflowkitError,
)
from mlflowkit.executors.base import Derived, Input, Stored, Task, TaskResult
from mlflowkit.keys import CallKeys, KeyMaker
from mlflowkit.outcomes import Progress, Rehearsal, Verdict, WalkResult
from mlflowkit.placeholders import SCALARS, leaves, map_leaves
from mlflowkit.plan import OPS as _OPS
from mlflowkit.plan import Node, Ref, find_refs
from mlflowkit.records import METRICS, CacheEntry, StepRun, StepStatus

if TYPE_CHECKING:
    from mlflowkit.cache import Cache
    from mlflowkit.executors.base import Executor

__all__ = ["rehearse", "walk"]


_GETITEM = _OPS["getitem"]
_GATHER = _OPS["gather"]
_NO_META: dict[str, Any] = {}  # never changed
#: ready calls whose keys are computed and looked up together (bounds what waits for them)
PREFETCH_AT_ONCE = 1024
#: tasks handed to the executor and not finished, at most; once reached, the walk waits until
#: half of them finished before it hands out more (the driver's memory for tasks and their
#: payloads is bounded by this, not by the width of a fan-out)
IN_FLIGHT = 8192


def _to_input(template: Any, digests: dict[str, str], handles: dict[str, Any]) -> Any:
    """Replace each Ref in a template by an ``Input`` carrying its digest and handle."""
    if type(template) is dict:  # the arguments of a call: most are a Ref or a plain scalar
        out: dict[str, Any] = {}
        for name, value in template.items():
            kind = type(value)
            if kind is Ref:
                node = value._node
                out[name] = Input(node, digests[node], handles[node])
            elif kind in SCALARS:
                out[name] = value
            else:
                out[name] = _nested_inputs(value, digests, handles)
        return out
    return _nested_inputs(template, digests, handles)


def _nested_inputs(template: Any, digests: dict[str, str], handles: dict[str, Any]) -> Any:
    """``_to_input`` of a structure (lists, tuples, dicts holding Refs)."""

    def make(ref: Ref[Any]) -> Input:
        node = ref._node
        return Input(node, digests[node], handles[node])

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


class _All:
    """``force=True``: every name is in it."""

    __slots__ = ()

    def __contains__(self, name: object) -> bool:
        return True

    def add(self, name: str) -> None:
        """Already in."""


class _Walk:
    """The state of one walk; see the module docstring for its states and routes."""

    __slots__ = (
        "cache",
        "dependents",
        "digests",
        "executor",
        "failure",
        "flights",
        "forced",
        "handles",
        "holds",
        "inline",
        "keys",
        "meta",
        "nodes",
        "on_first_task",
        "order",
        "outputs",
        "own_nodes",
        "prepared",
        "progress",
        "ready",
        "records",
        "rehearsal",
        "retry",
        "run_id",
        "running",
        "scanned",
        "waiting",
    )

    def __init__(
        self,
        nodes: dict[str, Node],
        outputs: Iterable[str],
        executor: Executor | None,
        cache: Cache | None,
        run_id: str,
        force: bool | set[str],
        progress: Progress,
        keys: KeyMaker,
        rehearsal: Rehearsal | None = None,
    ) -> None:
        # the run: what it is asked, and who it talks to
        self.run_id = run_id
        self.outputs = frozenset(outputs)
        #: execute although cached: these names (healing adds to them), or all of them
        self.forced: set[str] | _All = _All() if force is True else set(force or ())
        self.executor = executor
        #: every task runs in this thread: single flight's locked lookup is a call's only one
        self.inline = executor is not None and executor.capabilities.inline
        #: tasks run in this process, in the order given: a prefetch takes the locks of the
        #: misses it finds for their calls (``Cache.prefetch(hold=True)``); never in a dry run
        self.holds = executor is not None and executor.capabilities.ordered and rehearsal is None
        self.cache = cache
        self.keys = CallKeys(keys)
        self.progress = progress if type(progress) is not Progress else None  # None: nobody
        self.on_first_task: Callable[[], None] | None = None
        self.rehearsal = rehearsal
        # the graph (a fan-out adds to it: then it is copied first, see ``_expand``)
        self.nodes = nodes
        self.own_nodes = False
        self.order = list(nodes)
        self.dependents: dict[str, list[str]] = {}  # a node nobody waits for has no entry
        # the states: waiting -> ready -> running -> done
        self.waiting: dict[str, int] = {}
        self.ready: deque[str] = deque()
        #: how many nodes at the head of ``ready`` ``_prefetch`` went through already
        self.scanned = 0
        #: ready step call -> its arguments and ``CallKeys.of``, computed by ``_prefetch``
        self.prepared: dict[str, tuple[Any, tuple[dict[str, str], str, str, bool]]] = {}
        self.running: dict[str, Task] = {}
        #: key running -> the nodes waiting for its result (None until one does)
        self.flights: dict[str, list[str] | None] = {}
        self.retry: dict[str, list[str]] = {}  # producer re-executed -> consumers to retry
        self.records: dict[str, StepRun] = {}
        self.digests: dict[str, str] = {}
        self.handles: dict[str, Any] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.failure: TaskResult | None = None
        waiting, dependents, ready = self.waiting, self.dependents, self.ready
        for name, node in nodes.items():
            deps = node.deps
            if deps:
                waiting[name] = len(deps)
                for dep in deps:
                    waiters = dependents.get(dep)
                    if waiters is None:
                        dependents[dep] = [name]
                    else:
                        waiters.append(name)
            else:
                ready.append(name)

    # ------------------------------------------------------------------------------------
    def run(self) -> WalkResult:
        events: queue.SimpleQueue[TaskResult] = queue.SimpleQueue()
        on_done = events.put  # the one thing executors touch, from any thread
        interrupted: KeyboardInterrupt | None = None
        ready, running, process = self.ready, self.running, self._process
        full = False  # IN_FLIGHT tasks were running: wait until half of them are done
        try:
            while True:
                if full and len(running) <= IN_FLIGHT // 2:
                    full = False
                while ready and self.failure is None and not full:
                    if len(running) >= IN_FLIGHT:
                        full = True
                        break
                    if self.scanned:
                        self.scanned -= 1
                    elif len(ready) > 1 and self.cache is not None:
                        self._prefetch()  # many ready at once: their keys in one query
                        self.scanned -= 1
                    process(ready.popleft(), on_done)
                if not running:
                    break
                if events.empty():
                    assert self.executor is not None
                    self.executor.flush()
                result = events.get()
                self._done(running.pop(result.name), result)
        except KeyboardInterrupt as exc:  # Ctrl-C, or a step raised it: stop now
            interrupted = exc
            for name in running:  # still running: not waited for
                self.records[name].status = "skipped"
        for name in self.order:
            if name not in self.records:
                node = self.nodes[name]
                self.records[name] = StepRun(
                    name=name, status="skipped", step=node.step.qualified_name
                )
                self._advance(name, "skipped")
        return WalkResult(
            records=self.records,
            order=self.order,
            digests=self.digests,
            handles=self.handles,
            failure=self.failure,
            packages=self.keys.packages,
            interrupted=interrupted,
            verdicts=self.rehearsal.verdicts if self.rehearsal is not None else {},
        )

    def _advance(self, name: str, status: str) -> None:
        """Tell the progress display that a step call ended; internal nodes (``ref[i]``,
        ``ref.attr``, gathers) are not step calls and are not counted, as everywhere else."""
        if self.progress is not None and self.nodes[name].kind != "derived":
            self.progress.advance(name, status)

    # ------------------------------------------------------------------------------------
    def _process(self, name: str, on_done: Callable[[TaskResult], None]) -> None:
        """Take a ready node to running or done (see the routes in the module docstring)."""
        node = self.nodes[name]
        kind = node.kind
        rehearsal = self.rehearsal
        if rehearsal is not None and self._rehearsed(name, node):
            return
        if kind == "map":
            self._expand(node)
            return
        step = node.step
        prepared = self.prepared.pop(name, None) if self.prepared else None
        if prepared is not None:  # by ``_prefetch``, which looked its key up already
            args, (inputs, key, code, nested) = prepared
        else:
            args = _to_input(node.args, self.digests, self.handles) if node.deps else node.args
            if (
                kind == "derived"
                and step is _GETITEM
                and not node.persist  # a returned item goes through a task, which stores it
                and self._item(name, node, args)
            ):
                return
            try:
                inputs, key, code, nested = self.keys.of(name, node, args)
            except MlflowkitError as exc:  # an unhashable input, unreadable code: fail the call
                if rehearsal is not None:
                    raise
                self._refuse(node, exc)
                return
        # positional (a call per step): name, key, status, attempts, duration_s,
        # output_digest, error, step, code_digest, inputs
        record = StepRun(
            name, key, "skipped", 0, 0.0, None, None, step._qualified_name, code, inputs
        )
        if nested:  # a structure that may hold upstream values: lineage lists them
            record.upstream = _nested_upstream(args)
        self.records[name] = record
        cache = self.cache
        cacheable = cache is not None and step.identity.cache
        forced = cacheable and name in self.forced
        held = cache is not None and key in cache.held  # its lock taken by a prefetch
        if cacheable and not forced:
            assert cache is not None
            entry = cache.lookup(
                key,
                check=name in self.outputs,
                gather=step is _GATHER,
                # a call that will run here, under single flight, is looked up there, locked
                store=not (self.inline and kind == "step"),
            )
            if entry is not None:
                record.attempts = 0
                if rehearsal is not None:
                    total = rehearsal.fans.get(name)
                    if total is None:
                        self._verdict(name, "hit", "stored", key)
                    else:  # the gather of a fan-out whose elements are all stored
                        self._verdict(name, "hit", "fan-stored").total = total
                self._settle(
                    name,
                    "cached",
                    entry.output_digest,
                    Stored(entry.output_digest) if entry.stored else Derived(step, args),
                    entry.meta,
                    entry.meta.get(METRICS),  # those of the execution reused
                )
                return
        if rehearsal is not None:
            self._would_execute(name, node, key, args)
            return
        flights = self.flights
        if key in flights:  # the same call is already executing in this run
            waiters = flights[key]
            if waiters is None:
                flights[key] = [name]
            else:
                waiters.append(name)
            return
        store_value = (
            node.persist and cache is not None and (step.identity.cache or name in self.outputs)
        )
        task = Task(  # positional (a call per step), in the order of Task's fields
            name,
            step,
            key,
            self.run_id,
            args,
            store_value,  # store_value
            cacheable,  # cache_entry
            cacheable and kind == "step" and not forced and not held,  # single_flight
            node.checks,
        )
        self._dispatch(task, record, on_done)

    def _prefetch(self) -> None:
        """Prepare the next ``PREFETCH_AT_ONCE`` ready calls (``scanned`` counts them): the
        step calls that will look their key up keep their arguments and ``CallKeys.of`` in
        ``prepared`` for ``_process``, and their keys are looked up in one ``Cache.prefetch``.

        Left to ``_process``: forced and uncached calls (no lookup), calls whose key cannot be
        computed (``_process`` fails them, a dry run raises, as before), a dry run's calls
        answered before the walk or waiting on one that would execute. A prepared key stays
        right: a dependency is done again (healing) only after being processed again, which
        comes after the calls ready before it (``ready`` is first in, first out); ``_heal``
        drops them all the same.
        """
        cache = self.cache
        assert cache is not None
        nodes, digests, handles, forced = self.nodes, self.digests, self.handles, self.forced
        prepared, keys_of = self.prepared, self.keys.of
        known = self.rehearsal.known if self.rehearsal is not None else None
        keys: list[str] = []
        self.scanned = min(len(self.ready), PREFETCH_AT_ONCE)
        for name in islice(self.ready, self.scanned):
            node = nodes[name]
            if (
                node.kind != "step"
                or not node.step.identity.cache
                or name in forced
                or name in prepared
                or (known is not None and name in known)
            ):
                continue
            deps = node.deps
            if deps and not all(d in digests for d in deps):  # a dry run's would-execute
                continue
            args = _to_input(node.args, digests, handles) if deps else node.args
            try:
                got = keys_of(name, node, args)
            except MlflowkitError:
                continue  # ``_process`` computes it again and fails the call with the error
            prepared[name] = (args, got)
            keys.append(got[1])
        if len(keys) > 1:
            cache.prefetch(keys, hold=self.holds)

    def _dispatch(self, task: Task, record: StepRun, on_done: Callable[[TaskResult], None]) -> None:
        """Hand ``task`` to the executor: run here and now, or submitted (then ``running``)."""
        if self.on_first_task is not None:  # e.g. the driver records that the run is running
            first, self.on_first_task = self.on_first_task, None
            first()
        executor = self.executor
        assert executor is not None
        name, key = task.name, task.key
        try:
            # an executor that runs this call in this thread anyway does it now: no round trip
            result = executor.run_here(task)
            if result is None:
                record.started_at = time.time()  # until the result says when it started
                self.running[name] = task
                self.flights[key] = None
                executor.submit(task, on_done)
        except Exception as exc:  # the executor refused the task (e.g. no GPU for it)
            self.running.pop(name, None)
            self.flights.pop(key, None)
            self._fail(name, TaskResult(name, False, attempts=0, error=exc))
            if self.cache is not None and self.cache.held:
                self.cache.release(key)
            return
        if result is not None:
            self._done(task, result)

    # ------------------------------------------------------------------------------------
    def _done(self, task: Task, result: TaskResult) -> None:
        """Record how ``task`` ended, and settle or fail the nodes waiting for its key."""
        name, key = task.name, task.key
        if self.cache is not None and self.cache.held:  # its lock, taken by a prefetch
            self.cache.release(key)
        record = self.records[name]
        record.attempts = result.attempts
        record.duration_s = result.duration_s
        if result.started_at:
            record.started_at = result.started_at
        if not result.ok:
            err = result.error
            if isinstance(err, (CorruptObjectError, MissingObjectError)) and self._heal(name, err):
                return
            waiters = self.flights.pop(key, None) if self.flights else None
            self._fail(name, result)
            if isinstance(err, KeyboardInterrupt):  # the step was interrupted: so is the run
                raise err
            for waiter in waiters or ():
                self._fail(waiter, result)
            return
        waiters = self.flights.pop(key, None) if self.flights else None
        digest = result.output_digest
        assert digest is not None
        meta = result.meta
        if task.cache_entry:  # the task wrote or found this entry: the pack keeps it
            assert self.cache is not None
            if not result.cached:
                self.cache.note(
                    _entry(key, digest, record.step, task.store_value, meta, self.run_id),
                    gather=task.step is _GATHER,
                )
            elif result.entry is not None:
                self.cache.note(result.entry, gather=task.step is _GATHER)
        metric_log = meta.get(METRICS)
        self._settle(
            name, "cached" if result.cached else "executed", digest, result.value, meta, metric_log
        )
        for waiter in waiters or ():
            self._settle(waiter, "cached", digest, result.value, meta, metric_log)

    def _settle(
        self,
        name: str,
        status: StepStatus,
        digest: str,
        handle: Any,
        meta: dict[str, Any],
        metric_log: Any,
    ) -> None:
        """Node ``name`` is done with an output: record it, release what waits for it."""
        record = self.records[name]
        record.status = status
        record.output_digest = digest
        record.metric_log = metric_log
        self.digests[name] = digest
        self.handles[name] = handle
        if meta:  # most report nothing: no entry (readers default to ``_NO_META``)
            self.meta[name] = meta
        if self.progress is not None:
            self._advance(name, status)
        self._complete(name)

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

    def _refuse(self, node: Node, error: BaseException) -> None:
        """Fail ``node`` before it has a record or a task (its call cannot be made)."""
        self.records[node.name] = StepRun(name=node.name, step=node.step.qualified_name)
        self._fail(node.name, TaskResult(node.name, False, attempts=0, error=error))

    def _complete(self, name: str) -> None:
        """Release the nodes waiting for ``name`` (those retried after healing, if any)."""
        retried = self.retry.pop(name, None) if self.retry else None
        waiting = self.waiting
        # a node releases its dependents once: a producer done again (healing) releases the
        # nodes it is retried for instead
        for dep in retried if retried is not None else self.dependents.pop(name, ()):
            left = waiting[dep] - 1
            if left:
                waiting[dep] = left
            else:
                del waiting[dep]
                self.ready.append(dep)

    # ------------------------------------------------------------------------------------
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
        inputs, key, code, _ = self.keys.of(name, node, args)
        cached = self.records[parent].status == "cached"
        self.records[name] = StepRun(
            name=name,
            key=key,
            step=node.step.qualified_name,
            attempts=0 if cached else 1,
            code_digest=code,
            inputs=inputs,
        )
        if self.rehearsal is not None:
            self._verdict(name, "hit", "item", key)
        meta = _NO_META if length is None else {"len": length}
        self._settle(
            name, "cached" if cached else "executed", digest, Derived(node.step, args), meta, None
        )
        return True

    def _items(self, name: str) -> list[list[Any]] | None:
        """``[digest, length]`` of each item of node ``name``'s output (a list), if known.

        From what the producer reported, or for a gather, from the values it collected.
        """
        items: list[list[Any]] | None = self.meta.get(name, _NO_META).get("items")
        node = self.nodes[name]
        if items is None and node.step is _GATHER:
            meta, digests = self.meta, self.digests
            items = [[digests[d], meta.get(d, _NO_META).get("len")] for d in node.deps]
        return items

    def _heal(self, consumer: str, error: CorruptObjectError | MissingObjectError) -> bool:
        """A stored input was corrupt or gone: re-execute its producer(s), retry ``consumer``
        (and the nodes that waited for its key).

        The producer is a direct upstream of ``consumer`` or, for a derived input such as an
        item of a cached list, any cached step call whose output has that digest. Its cache
        entry is forgotten and it is forced to execute.
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
        if not producers or self.cache is None:
            return False
        key = self.records[consumer].key
        retried = [consumer, *(self.flights.pop(key, None) or ())] if key else [consumer]
        for producer in producers:
            producer_key = self.records[producer].key
            if producer_key is not None:
                self.cache.forget(producer_key)
            self.forced.add(producer)
            for name in retried:
                self.retry.setdefault(producer, []).append(name)
                self.waiting[name] = self.waiting.get(name, 0) + 1
            self.ready.append(producer)
        for name in retried:
            del self.records[name]
        self.prepared.clear()  # computed from digests healing may change (see ``_prefetch``)
        return True

    def _expand(self, node: Node) -> None:
        """Fan out a ``map`` node now that the lists it maps over are known."""
        lengths: dict[str, int] = {}
        fan = node.fan or {}
        for pname, source in fan.items():
            if isinstance(source, Ref):
                meta = self.meta.get(source.node, _NO_META)
                if "len" not in meta:
                    err = ExecutorError(
                        f"Step {node.name!r} maps over the output of {source.node!r}, which is "
                        f"not a list or tuple (no length was reported). Return a list from "
                        f"{source.node!r}.",
                        step=node.name,
                    )
                    self._refuse(node, err)
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
            self._refuse(node, err)
            return
        n = next(iter(lengths.values())) if lengths else 0
        if not self.own_nodes:  # the plan's own dict stays as it was planned
            self.nodes, self.own_nodes = dict(self.nodes), True
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
                            node.code,
                            node.line,
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
                node.code,
                node.line,
                checks=node.checks,
            )
            new.append(elem)
            self.nodes[elem.name] = elem
            elems.append(Ref(elem.name, Any, None))  # type: ignore[arg-type]
        gather = Node(
            node.name,
            _GATHER,
            "derived",
            {"items": tuple(elems)},
            tuple(e.node for e in elems),
            node.out_type,
            node.code,
            node.line,
            persist=node.persist,
        )
        self.nodes[node.name] = gather
        if self.rehearsal is not None:
            self.rehearsal.fans[node.name] = n
        position = self.order.index(node.name)
        self.order[position:position] = [m.name for m in new]
        # the elements replace the one call the fan-out was counted as (items are internal)
        if self.progress is not None:
            self.progress.grow(sum(m.kind == "step" for m in new) - 1)
        released: list[str] = []
        for m in new:
            # what it waits for: its dependencies not done yet (a done one released its
            # dependents already, so it is not told about this one)
            pending = [d for d in m.deps if d not in self.digests or d in self.running]
            if pending:
                self.waiting[m.name] = len(pending)
                for dep in pending:
                    self.dependents.setdefault(dep, []).append(m.name)
            else:
                released.append(m.name)
        # the gather waits for the elements it collects
        if gather.deps:
            self.waiting[node.name] = len(gather.deps)
        for elem_name in gather.deps:
            self.dependents.setdefault(elem_name, []).append(node.name)
        self.ready.extend(released)
        if not gather.deps:
            self.ready.append(node.name)

    # -- a dry run ---------------------------------------------------------------------------
    def _verdict(self, name: str, action: str, reason: str, key: str | None = None) -> Verdict:
        assert self.rehearsal is not None
        verdict = self.rehearsal.verdicts[name] = Verdict(action, reason, key)
        return verdict

    def _rehearsed(self, name: str, node: Node) -> bool:
        """A dry run's decisions taken before a node's key is known; True if it is done.

        In the order a run meets them: answered before the walk, ``cache=False``, a fan-out
        whose lists are not known, a dependency that would execute; and the end of a fan-out
        (its gather), reported for the fan-out as a whole.
        """
        rehearsal = self.rehearsal
        assert rehearsal is not None
        known = rehearsal.known.get(name)
        if known is not None:
            self.records[name] = StepRun(name=name, step=node.step.qualified_name)
            self._verdict(name, "hit", "known")
            self._settle(name, "cached", known, None, _NO_META, None)
            return True
        unknown = rehearsal.unknown
        if not node.step.identity.cache:
            self._verdict(name, "execute", "uncached")
            self._unknown(name, name)
            return True
        blocked = next((d for d in node.deps if d in unknown), None)
        if node.kind == "map":
            if blocked is not None or not self._fan_known(node):
                self._verdict(name, "execute", "fan-unknown")
                self._unknown(name, name)
                return True
            return False
        total = rehearsal.fans.get(name)
        if total is not None:  # the gather of a fan-out: its elements decided it
            count = sum(1 for d in node.deps if d in unknown)
            if count:
                verdict = self._verdict(name, "execute", "fan-partial")
                verdict.count, verdict.total = count, total
                self._unknown(name, name)
                return True
            return False  # its key is looked up; the verdict says so (``_would_execute``)
        if blocked is not None:
            cause = unknown[blocked]
            self._verdict(name, "execute", "upstream").cause = cause
            self._unknown(name, cause)
            return True
        return False

    def _fan_known(self, node: Node) -> bool:
        """Whether the lists a fan-out maps over are known item by item, of equal lengths."""
        lengths: set[int] = set()
        for source in (node.fan or {}).values():
            if isinstance(source, Ref):
                items = self._items(source.node)
                if items is None or any(digest is None for digest, _ in items):
                    return False
                lengths.add(len(items))
            else:
                lengths.add(len(source))
        return len(lengths) == 1

    def _would_execute(self, name: str, node: Node, key: str, args: dict[str, Any]) -> None:
        """A dry run's miss: record why, and mark ``name`` done without a digest."""
        assert self.rehearsal is not None
        total = self.rehearsal.fans.get(name)
        if total is not None:  # all elements stored, their gather is not
            self._verdict(name, "execute", "fan-collect").total = total
        else:
            self._verdict(name, "execute", "miss", key).args = args
        self._unknown(name, name)

    def _unknown(self, name: str, cause: str) -> None:
        assert self.rehearsal is not None
        self.rehearsal.unknown[name] = cause
        if name not in self.records:
            self.records[name] = StepRun(name=name, step=self.nodes[name].step.qualified_name)
        self._complete(name)


def _entry(
    key: str, digest: str, step: str, stored: bool, meta: dict[str, Any], run_id: str
) -> CacheEntry:
    return CacheEntry(
        key=key, output_digest=digest, step=step, stored=stored, meta=meta, run_id=run_id
    )


def walk(
    nodes: dict[str, Node],
    outputs: list[str],
    executor: Executor,
    cache: Cache | None,
    *,
    run_id: str,
    force: bool | set[str] = False,
    progress: Progress | None = None,
    keys: KeyMaker | None = None,
    on_first_task: Callable[[], None] | None = None,
) -> WalkResult:
    """Walk the graph of ``nodes``, executing misses on ``executor``; see module docstring.

    ``cache`` answers hits (None: nothing is cached, e.g. no store). ``on_first_task`` is
    called once, just before the first task is submitted (never when everything is a hit).
    """
    progress = progress or Progress()
    state = _Walk(nodes, outputs, executor, cache, run_id, force, progress, keys or KeyMaker())
    state.on_first_task = on_first_task
    if state.progress is not None:  # somebody watches: how many step calls there are
        progress.start(sum(n.kind != "derived" for n in nodes.values()))
    try:
        return state.run()
    finally:
        try:
            if cache is not None:  # locks a prefetch took for calls that did not run
                cache.release_all()
        finally:
            progress.finish()


def rehearse(
    nodes: dict[str, Node], cache: Cache, keys: KeyMaker, rehearsal: Rehearsal
) -> WalkResult:
    """Walk the graph of ``nodes`` as a run would, executing nothing: a ``Verdict`` per node.

    Hits are looked up in ``cache``; a node that would execute is done without a digest, and
    what depends on it is reported as waiting on it. An unhashable input raises
    ``HashingError`` (a run would fail that call).
    """
    state = _Walk(nodes, (), None, cache, "", False, Progress(), keys, rehearsal)
    return state.run()
