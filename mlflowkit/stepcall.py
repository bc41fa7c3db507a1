"""Running one task where it executes: resolve inputs, call, check, hash, store, report.

Invariants
----------
* ``execute`` never raises for a failure of the user's function: it returns a failed
  ``TaskResult`` carrying the exception and its traceback text (so it can cross processes).
  That holds for every exception the function raises, ``BaseException``\\ s included:
  ``SystemExit`` and ``GeneratorExit`` are ordinary step failures (retried, then the run
  fails); ``KeyboardInterrupt`` (Ctrl-C, or a step raising it) is never retried, and the
  scheduler that receives it stops the run as interrupted and raises it again.
* Retries re-run the function only (not input loading); ``retry_delay`` doubles each attempt.
* Inputs that planning could not type (``task.checks``: derived values such as ``ref.attr``
  of an unannotated output) are checked against the step's annotations before the function
  is called; a mismatch fails the task with ``TypeCheckError`` and the function never runs.
* The output is checked against the step's return annotation, hashed, and, when asked, written
  to the store *before* the cache entry, so a cache entry never points at a missing object.
  An executor may take over that write (``execute(..., write=...)``, e.g. to write in the
  background); it must keep the same order (``write_output`` does).
* ``mk.current()`` and ``mk.rng()`` read a context variable set for the duration of the call.
* A step cannot change a value under the steps that share it (``guard_arguments``), on every
  executor alike: NumPy arrays reach it as read-only views (writing into one fails the step with
  ``InputMutationError``), lists, dicts, sets and bytearrays as copies (their items guarded in
  turn), pandas frames and series as copies (shallow under copy-on-write). Other objects are
  passed as they are. mlflowkit's own small steps (items, attributes, gathers) get the values
  as they are: they never change them.
* ``mk.current()``, ``mk.rng()`` and ``mk.log_metric()`` read a context variable set for the
  duration of the call. Its frame has a slot for the call's metric log, created only when the
  step logs a metric (a step that logs nothing allocates nothing for it); the log of the
  attempt that succeeded goes into the output's ``meta`` (``records.METRICS``), so it is
  written with the cache entry and travels with the result to the driver. The log of a
  failed attempt is dropped.
"""

from __future__ import annotations

import inspect
import operator
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlflowkit.cache import Cache
from mlflowkit.errors import InputMutationError, MlflowkitError, TypeCheckError
from mlflowkit.executors.base import Derived, InMemory, Input, Stored, Task, TaskResult
from mlflowkit.hashing import hash_value
from mlflowkit.placeholders import SCALARS, leaves, map_leaves
from mlflowkit.plan import OPS
from mlflowkit.records import METRICS, NO_META, CacheEntry
from mlflowkit.wiring import check_value, describe, describe_value, mismatch, short_repr

if TYPE_CHECKING:
    import numpy as np

    from mlflowkit.step import Step
    from mlflowkit.store.base import ArtifactStore

__all__ = [
    "StepContext",
    "Writer",
    "call_step",
    "current",
    "execute",
    "guard_arguments",
    "resolve_template",
    "rng",
    "write_output",
]


@dataclass(frozen=True)
class StepContext:
    """What a running step can know about itself (``mk.current()``)."""

    name: str
    run_id: str
    key: str
    attempt: int = 1


#: the running call's frame ``[task, attempt number, metric log or None]``; ``current()``
#: makes the ``StepContext`` on demand (most steps never ask, and a fan-out runs thousands of
#: calls), and ``mlflowkit.tracking`` creates the metric log on the first metric logged
CURRENT_CALL: ContextVar[list[Any] | None] = ContextVar("mlflowkit_current", default=None)


def current() -> StepContext:
    """The step call running in this thread: its name, run id and cache key.

    Raises
    ------
    MlflowkitError
        When called outside a running step.
    """
    running = CURRENT_CALL.get()
    if running is None:
        raise MlflowkitError(
            "mk.current() was called outside a running step: expected to be inside a step "
            "executed by a run, found none. Call it from a step function during plan.run()."
        )
    task: Task = running[0]
    return StepContext(task.name, task.run_id, task.key, running[1])


def rng() -> np.random.Generator:
    """A ``numpy.random.Generator`` seeded from the running step's cache key.

    The same inputs give the same random stream, on any machine and executor.
    """
    import numpy as np

    ctx = current()
    return np.random.default_rng(int(ctx.key[:32], 16))


# ---------------------------------------------------------------------------------------------
def resolve_template(template: Any, resolve: Callable[[Any], Any]) -> Any:
    """Replace every ``Input`` in an argument template by ``resolve(input.handle)``."""
    if type(template) is dict:  # the arguments of a call: most are an Input or a plain scalar
        for value in template.values():
            if type(value) not in SCALARS:
                break
        else:  # plain values only: nothing to resolve, and nobody changes the dict
            return template
        out = {}
        for name, value in template.items():
            if type(value) is Input:
                out[name] = resolve(value.handle)
            elif type(value) in SCALARS:
                out[name] = value
            else:
                out[name] = map_leaves(value, Input, lambda item: resolve(item.handle))
        return out
    return map_leaves(template, Input, lambda item: resolve(item.handle))


def local_resolver(store: ArtifactStore | None) -> Callable[[Any], Any]:
    """A resolver for handles valid in this process: in-memory, stored and derived values.

    A stored or derived value is loaded once per resolver (one run on one executor) and then
    shared by every step that consumes it, instead of being read from the store again.
    """
    return _LocalResolver(store)


class _LocalResolver:
    """``local_resolver``'s resolver: an object, not a closure calling itself, so it holds no
    reference cycle and the values it loaded are freed as soon as it is dropped."""

    __slots__ = ("loaded", "lock", "store")

    def __init__(self, store: ArtifactStore | None) -> None:
        self.store = store
        self.loaded: dict[Any, Any] = {}
        self.lock = threading.Lock()

    def __call__(self, handle: Any) -> Any:
        if isinstance(handle, InMemory):
            return handle.value
        loaded = self.loaded
        if isinstance(handle, Stored):
            memo = loaded.get(handle.digest, _MISSING)
            if memo is not _MISSING:
                return memo
            if self.store is None:
                raise MlflowkitError(f"value {handle.digest[:12]} is stored but no store is open")
            value = self.store.get(handle.digest)
            with self.lock:
                loaded[handle.digest] = value
            return value
        if isinstance(handle, Derived):
            memo = loaded.get(id(handle), _MISSING)
            if memo is not _MISSING and memo[0] is handle:
                return memo[1]
            value = call_step(handle.step, resolve_template(handle.args, self))
            with self.lock:
                loaded[id(handle)] = (handle, value)
            return value
        raise TypeError(f"cannot resolve a value handle of type {type(handle).__name__}")


_MISSING = object()


def call_step(step: Step[Any, Any], arguments: dict[str, Any]) -> Any:
    """Call ``step.fn`` with bound ``arguments`` (parameter name → value)."""
    if step._simple_params is not None:  # every parameter can be passed by name
        return step.fn(**arguments)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for pname, param in step.signature.parameters.items():
        if pname not in arguments:
            continue
        value = arguments[pname]
        kind = param.kind
        if (
            kind is inspect.Parameter.POSITIONAL_ONLY
            or kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ):
            args.append(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            args.extend(value)
        elif kind is inspect.Parameter.KEYWORD_ONLY:
            kwargs[pname] = value
        else:
            kwargs.update(value)
    return step.fn(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Inputs that a step cannot change under its upstream
# ---------------------------------------------------------------------------------------------
#: One read-only view made for a step call: (parameter, view, the array it shows).
View = tuple[str, Any, Any]
_NO_VIEWS: list[View] = []  # never changed

#: Steps of mlflowkit's own (``ref[i]``, ``ref.attr``, gathers) never change their inputs.
_INTERNAL = "mlflowkit.plan:_op_"
#: The gathering of a fan-out, by name (compared in a worker process too): see ``_meta``.
_GATHER = OPS["gather"].qualified_name


def guard_arguments(step: Step[Any, Any], arguments: dict[str, Any]) -> list[View]:
    """Make ``arguments`` (a dict made for this call) what ``step`` may receive, in place;
    return the read-only views made.

    The values resolved for a call are shared: with the step that produced them, with the other
    steps reading them, and with the cache entry recorded under their digest. A step that
    changed one in place would change what the others see (and a later run would get a value
    that differs from its cached digest). So, on every executor: a NumPy array is passed as a
    read-only view (O(1); writing into it raises NumPy's ``ValueError``, which ``execute``
    reports as ``InputMutationError``); a list, dict, set or bytearray as a copy whose items are
    guarded in turn (O(n), less than hashing it cost its producer); a pandas ``DataFrame`` or
    ``Series`` as a copy (shallow, so O(1), under pandas' copy-on-write; deep otherwise).
    Anything else is passed as it is (see docs: steps must not change such inputs).
    """
    views: list[View] | None = None
    ndarray = _ndarray if _ndarray is not None else _array_type()
    for name, value in arguments.items():  # (values replaced, keys untouched: no resize)
        kind = type(value)
        if kind in SCALARS:
            continue
        if views is None:
            if step._qualified_name.startswith(_INTERNAL):
                return _NO_VIEWS
            views = []
        if ndarray is not None and (kind is ndarray or isinstance(value, ndarray)):
            view = value.view()  # the common case, inline: a fan-out passes one per call
            view.setflags(write=False)
            views.append((name, view, value))
            arguments[name] = view
        else:
            arguments[name] = _guard(value, name, views)
    return views or _NO_VIEWS


#: ``numpy.ndarray`` once NumPy is imported (nothing here imports it: without NumPy loaded, no
#: value can be an array)
_ndarray: Any = None


def _array_type() -> Any:
    global _ndarray
    if _ndarray is None:
        np = sys.modules.get("numpy")
        if np is not None:
            _ndarray = np.ndarray
    return _ndarray


def _only_scalars(items: Any) -> bool:
    """Whether every item is a plain scalar (decided in C: a gather holds thousands)."""
    return not items or set(map(type, items)) <= SCALARS


def _guard(value: Any, name: str, views: list[View], depth: int = 0) -> Any:
    """``value`` as a step receives it (see ``guard_arguments``)."""
    kind = type(value)
    if kind in SCALARS:
        return value
    ndarray = _ndarray if _ndarray is not None else _array_type()
    if ndarray is not None and isinstance(value, ndarray):
        view = value.view()
        view.setflags(write=False)
        views.append((name, view, value))
        return view
    if depth >= _DEEP and kind in _NESTED:
        return _guard_deep(value, name, views)
    depth += 1
    if kind is list:
        if _only_scalars(value):
            return value.copy()
        return [_guard(item, name, views, depth) for item in value]
    if kind is dict:
        if _only_scalars(value.values()):
            return value.copy()
        return {k: _guard(item, name, views, depth) for k, item in value.items()}
    if kind is tuple or (isinstance(value, tuple) and hasattr(kind, "_make")):
        if _only_scalars(value):
            return value
        items = [_guard(item, name, views, depth) for item in value]
        if all(map(operator.is_, items, value)):
            return value
        return kind(items) if kind is tuple else kind._make(items)
    if kind is set or kind is bytearray:
        return kind(value)
    if kind.__module__.partition(".")[0] == "pandas":
        return _guard_pandas(value)
    return value


#: How deep ``_guard`` recurses into lists, dicts and tuples before it hands the rest to
#: ``map_leaves``, which walks any depth without recursion.
_DEEP = 100
_NESTED = frozenset((list, dict, tuple))


def _guard_deep(value: Any, name: str, views: list[View]) -> Any:
    """``_guard`` for nesting past ``_DEEP`` levels: containers copied, arrays as read-only
    views (named tuples, sets and pandas values that deep are passed through ``map_leaves``'s
    rules: copied when mutable, else as they are)."""
    ndarray = _ndarray if _ndarray is not None else _array_type()
    if ndarray is None:
        return map_leaves(value, (), lambda leaf: leaf)

    def view_of(array: Any) -> Any:
        view = array.view()
        view.setflags(write=False)
        views.append((name, view, array))
        return view

    return map_leaves(value, ndarray, view_of)


def _guard_pandas(value: Any) -> Any:
    pd = sys.modules.get("pandas")
    if pd is None or not isinstance(value, (pd.DataFrame, pd.Series)):
        return value
    # copy-on-write: always from pandas 3 (whose option is deprecated), an option before
    cow = int(pd.__version__.split(".")[0]) >= 3 or pd.get_option("mode.copy_on_write") is True
    return value.copy(deep=not cow)


def _wrote_into_input(task: Task, views: list[View], exc: BaseException) -> InputMutationError:
    """The error of a step that wrote into one of its read-only input arrays."""
    params = tuple(dict.fromkeys(name for name, _, _ in views))
    first = params[0]
    return InputMutationError(
        f"Step {task.name!r} wrote into an input array ({type(exc).__name__}: {exc}). Expected "
        f"a step to leave its inputs as they are: mlflowkit passes NumPy arrays as read-only "
        f"views ({', '.join(map(repr, params))} here), so that no step changes a value its "
        f"upstream produced, and cached, under the steps that share it. Copy it first: "
        f"{first} = {first}.copy(), or compute a new array ({first} + 1 rather than {first} "
        f"+= 1).",
        step=task.name,
        parameters=params,
    )


def _writes_read_only(exc: BaseException) -> bool:
    """Whether ``exc`` is NumPy refusing to write into a read-only array."""
    return isinstance(exc, ValueError) and "read-only" in str(exc)


#: ``write(task, output, digest, meta)``: persist a finished task's output and cache entry.
Writer = Callable[[Task, Any, str, dict[str, Any]], None]


def write_output(
    task: Task, store: ArtifactStore | None, output: Any, digest: str, meta: dict[str, Any]
) -> None:
    """Write ``output`` (when ``task.store_value``), *then* its cache entry (``task.cache_entry``).

    The object is written before the entry, so a cache entry never points at a missing object.
    """
    if store is None:
        return
    if task.store_value:
        store.put(output, digest, serializer=task.step.identity.serializer)
    if task.cache_entry:
        Cache(store).record(
            CacheEntry(
                key=task.key,
                output_digest=digest,
                step=task.step.qualified_name,
                stored=task.store_value,
                meta=meta,
                created_at=time.time(),
                run_id=task.run_id,
            )
        )


#: Lists and tuples up to this length report the digest of each item (see ``_meta``).
MAX_ITEM_DIGESTS = 100_000
#: Items bigger than this are not hashed a second time for ``_meta``.
MAX_ITEM_BYTES = 16 * 2**20


def _meta(value: Any, with_items: bool = True) -> dict[str, Any]:
    """Small facts about an output that the scheduler can use without loading it.

    For a list or tuple: its length, and (``with_items``) for each item its content digest and
    (for nested lists and tuples) length. The scheduler answers ``ref[i]`` and the elements of
    a run-time fan-out from these, without a task per item; a cached run does so without
    loading the value. Items larger than ``MAX_ITEM_BYTES`` get no digest (they go through a
    task). A gather's output gets its length only (``with_items=False``): its items are the values
    it collected, whose digests and lengths the scheduler holds already (its ``_items``), so
    hashing them again, and keeping the digests in its cache entry until the run's segment is
    written, would cost ~190 bytes per element for nothing.
    """
    if not isinstance(value, (list, tuple)):
        return {}
    meta: dict[str, Any] = {"len": len(value)}
    if with_items and len(value) <= MAX_ITEM_DIGESTS:
        items: list[list[Any]] = []
        for item in value:
            nbytes = getattr(item, "nbytes", 0)
            digest = (
                hash_value(item)
                if not (isinstance(nbytes, int) and nbytes > MAX_ITEM_BYTES)
                else None
            )
            length = len(item) if isinstance(item, (list, tuple)) else None
            items.append([digest, length])
        meta["items"] = items
    return meta


def execute(
    task: Task,
    store: ArtifactStore | None,
    resolve: Callable[[Any], Any] | None = None,
    *,
    keep_value: bool = True,
    write: Writer | None = None,
) -> TaskResult:
    """Run one task here and report what happened.

    Parameters
    ----------
    task:
        The step call, its key and its argument template.
    store:
        Where outputs and cache entries are written (may be None for ``cache=False`` work).
    resolve:
        Turns value handles into values; defaults to ``local_resolver(store)``.
    keep_value:
        Put the output in the result as ``InMemory``; executors that keep values elsewhere
        pass False and attach their own handle.
    write:
        Persists the output and its cache entry once the output is checked and hashed;
        defaults to writing both to ``store`` right away (``write_output``).
    """
    started = time.time()
    t0 = time.perf_counter()
    if resolve is None:
        resolve = local_resolver(store)
    try:
        arguments = resolve_template(task.args, resolve)
        if task.checks:
            check_inputs(task, arguments)
        # a dict of its own, unless all are plain scalars (then the template itself)
        views = guard_arguments(task.step, arguments) if arguments is not task.args else _NO_VIEWS
    except Exception as exc:  # inputs could not be loaded (corrupt, missing) or typed: report it
        return TaskResult(
            task.name,
            False,
            attempts=0,
            duration_s=time.perf_counter() - t0,
            started_at=started,
            error=exc,
            traceback=traceback.format_exc(),
        )
    if task.single_flight and store is not None:
        # Two runs on one store reaching the same call: one executes, the other waits and
        # takes its result (``Cache.claim``).
        with Cache(store).claim(task.key) as entry:
            if entry is not None:
                return TaskResult(
                    task.name,
                    True,
                    output_digest=entry.output_digest,
                    value=Stored(entry.output_digest) if entry.stored else None,
                    attempts=0,
                    duration_s=time.perf_counter() - t0,
                    started_at=started,
                    meta=dict(entry.meta),
                    cached=True,
                    entry=entry,
                )
            return _run(task, store, arguments, views, started, t0, keep_value, write)
    return _run(task, store, arguments, views, started, t0, keep_value, write)


def check_inputs(task: Task, arguments: dict[str, Any]) -> None:
    """Check the parameters ``task.checks`` names against the step's annotations.

    Raises
    ------
    TypeCheckError
        When a value does not fit; the message names the step, the parameter, what was
        expected and found, and the derived value it came from.
    """
    step = task.step
    hints = step._hints()
    params = step.signature.parameters
    for pname in task.checks:
        expected = hints.get(pname)
        if expected is None or pname not in arguments:
            continue
        value = arguments[pname]
        kind = params[pname].kind if pname in params else None
        if kind is inspect.Parameter.VAR_POSITIONAL:
            items = list(value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            items = list(value.values())
        else:
            items = [value]
        for item in items:
            if check_value(item, expected):
                continue
            sources = ", ".join(
                dict.fromkeys(repr(i.node) for i in leaves(task.args[pname], Input))
            )
            raise TypeCheckError(
                f"Step {task.name!r}, parameter {pname!r}: expected {describe(expected)}, found "
                f"{describe_value(item)} ({short_repr(item)}){mismatch(item, expected)}. The "
                f"value comes from {sources}, an attribute or item whose type was not known "
                f"while planning, so it is checked before the step runs; the step did not run. "
                f"Fix the wiring, or annotate the producing step's return type so that "
                f"planning checks it.",
                step=task.name,
            )


def _run(
    task: Task,
    store: ArtifactStore | None,
    arguments: dict[str, Any],
    views: list[View],
    started: float,
    t0: float,
    keep_value: bool,
    write: Writer | None = None,
) -> TaskResult:
    step = task.step
    attempts = 0
    while True:
        attempts += 1
        frame = [task, attempts, None]  # the metric log slot is filled by mk.log_metric
        token = CURRENT_CALL.set(frame)
        try:
            output = (
                step.fn(**arguments)  # call_step's common case, without the extra call
                if step._simple_params is not None
                else call_step(step, arguments)
            )
        except BaseException as exc:  # SystemExit, GeneratorExit too: see the module doc
            wrote = bool(views) and _writes_read_only(exc)  # not retried: it would write again
            if (
                not wrote
                and attempts <= step.hints.retries
                and not isinstance(exc, KeyboardInterrupt)
            ):
                delay = step.hints.retry_delay
                if delay > 0:
                    time.sleep(delay * 2 ** (attempts - 1))
                continue
            tb = traceback.format_exc()
            error: BaseException = exc
            if wrote:
                error = _wrote_into_input(task, views, exc)
                error.__cause__ = exc
                tb = f"{tb}\n{type(error).__name__}: {error}\n"
            return TaskResult(
                task.name,
                False,
                attempts=attempts,
                duration_s=time.perf_counter() - t0,
                started_at=started,
                error=error,
                traceback=tb,
            )
        finally:
            CURRENT_CALL.reset(token)
        break
    if views:  # a step returning its input as it is returns the array, not our view of it
        for _, view, original in views:
            if output is view:
                output = original
                break
    try:
        expected = step._hints().get("return")
        if (
            expected is not None
            and type(output) is not expected
            and not check_value(output, expected)
        ):
            raise TypeCheckError(
                f"Step {task.name!r} returned {describe_value(output)}, but its return "
                f"annotation says {describe(expected)}{mismatch(output, expected)}. Fix the "
                f"function or its annotation.",
                step=task.name,
            )
        digest = hash_value(output)
        meta = (
            _meta(output, step._qualified_name != _GATHER)
            if isinstance(output, (list, tuple))
            else NO_META
        )
        if frame[2] is not None:  # the step logged metrics: they are stored with the output
            meta = {**meta, METRICS: frame[2]}
        if write is not None:
            write(task, output, digest, meta)
        elif task.store_value or task.cache_entry:
            write_output(task, store, output, digest, meta)
    except Exception as exc:
        return TaskResult(
            task.name,
            False,
            attempts=attempts,
            duration_s=time.perf_counter() - t0,
            started_at=started,
            error=exc,
            traceback=traceback.format_exc(),
        )
    return TaskResult(  # positional: a fan-out makes thousands
        task.name,
        True,
        digest,
        InMemory(output) if keep_value else None,
        attempts,
        time.perf_counter() - t0,
        started,
        meta,
    )
