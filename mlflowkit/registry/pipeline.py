"""Named artifacts inside pipelines: ``mk.publish`` and ``mk.artifact`` while planning, and
what a run does with them.

``mk.artifact(spec)`` resolves the spec to one version *while planning* and adds a source node
named ``artifact:<name>`` whose only argument is that version's digest. Before the walk, the
driver (``prepare``) checks the run's store holds that object and records the node's cache
entry pointing at it, so the node is always a cache hit: its consumers receive the stored
value and are keyed by its content digest, and a new version with equal content changes
nothing downstream.

``mk.publish(name, value)`` records the wish on the plan; when the run succeeds, ``publish``
makes each value the next version of its name (no new version for equal content).

Invariants
----------
* A plan that neither publishes nor consumes costs nothing here: the driver calls into this
  module only when ``plan.publishes`` or ``plan.consumes`` is non-empty.
* A cached re-run that publishes reads the latest version's digest (one index query) and
  writes nothing when it is equal.
* Versions are made only for a run that succeeded, after its outputs are stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from mlflowkit.errors import RegistryError
from mlflowkit.registry import db, signed
from mlflowkit.registry.names import check_name, parse_spec
from mlflowkit.registry.records import ArtifactVersion
from mlflowkit.registry.versions import check_metadata, resolve
from mlflowkit.step import TRACER, Step
from mlflowkit.tracing import Tracer

if TYPE_CHECKING:
    from mlflowkit.keys import KeyMaker
    from mlflowkit.plan import Ref, TracedPlan

__all__ = [
    "ARTIFACT_PREFIX",
    "Publish",
    "check_publish",
    "consume",
    "consumed_record",
    "pinned",
    "prepare",
    "publish",
    "publish_results",
]

T = TypeVar("T")

#: the display name of an ``mk.artifact`` node is this prefix and the artifact's name
ARTIFACT_PREFIX = "artifact:"


@dataclass(frozen=True)
class Publish:
    """One ``mk.publish`` call recorded while planning."""

    name: str
    value: Any
    metadata: dict[str, Any]
    location: str


@dataclass(frozen=True)
class Consumed:
    """One ``mk.artifact`` resolution: the version, and the store it was looked up in."""

    version: ArtifactVersion
    store_url: str


def _load_artifact(digest: str) -> Any:
    """The value of a named artifact's version: answered from the run's store by its cache
    entry (``prepare``); this function runs only if that entry vanished during the run."""
    raise RegistryError(
        f"the object {digest[:12]} of a named artifact was not found in the run's store while "
        f"the run was going on (removed by gc?); run the pipeline again"
    )


#: while ``mk.reproduce`` plans a past run: name -> the version that run consumed
_PINNED: ContextVar[dict[str, ArtifactVersion] | None] = ContextVar(
    "mlflowkit_pinned_artifacts", default=None
)


@contextmanager
def pinned(versions: dict[str, ArtifactVersion]) -> Iterator[None]:
    """Make ``mk.artifact`` resolve each name to the given version (for ``mk.reproduce``)."""
    token = _PINNED.set(versions)
    try:
        yield
    finally:
        _PINNED.reset(token)


def _tracer(what: str, fix: str) -> Tracer:
    tracer = TRACER.get()
    if not isinstance(tracer, Tracer):
        raise RegistryError(
            f"{what} is for use inside a pipeline body while it is planned; found no pipeline "
            f"being planned. {fix}"
        )
    return tracer


def publish(name: str, ref_or_value: T, *, metadata: dict[str, Any] | None = None) -> T:
    """Publish ``ref_or_value`` as the next version of ``name`` when the run succeeds.

    Inside a pipeline body only; returns its argument, so it can wrap a step call. Outside a
    pipeline use ``store.publish(name, value)``.

    Raises
    ------
    RegistryError
        An invalid name or metadata, a name published twice in one pipeline, or a call
        outside a pipeline.
    """
    from mlflowkit.plan import user_location

    check_name(name)
    tracer = _tracer(
        f"mk.publish({name!r}, ...)", f"Outside a pipeline use store.publish({name!r}, value)."
    )
    meta = check_metadata(name, metadata)
    loc = user_location()
    for earlier in tracer.publishes:
        if earlier.name == name:
            raise RegistryError(
                f"mk.publish({name!r}, ...) at {loc}: {name!r} is already published by this "
                f"pipeline (at {earlier.location}); a run makes at most one version of a name. "
                f"Publish the other value under another name.",
                name=name,
            )
    tracer.publishes.append(Publish(name, ref_or_value, meta, loc))
    return ref_or_value


def consume(spec: str, open_store: Callable[[], Any]) -> Ref[Any]:
    """A ``Ref`` to a version of a named artifact, resolved now, while planning.

    What ``mk.artifact`` does (:mod:`mlflowkit.registry.artifacts`, which opens the store):
    ``open_store()`` is called only when the version is not pinned (``reproduce``).

    Raises
    ------
    RegistryError
        Unknown name, version or stage (what exists is listed), or a call outside a pipeline.
    """
    parsed = parse_spec(spec)
    tracer = _tracer(
        f"mk.artifact({spec!r})", f"Outside a pipeline use store.artifact({spec!r}).load()."
    )
    pins = _PINNED.get()
    if pins is not None and parsed.name in pins:
        version = pins[parsed.name]
        url = "" if version._store is None else str(version._store.url)
    else:
        the_store = open_store()
        version = resolve(the_store, parsed)
        url = the_store.url
    step: Step[Any, Any] = Step(_load_artifact, version="1", name=ARTIFACT_PREFIX + version.name)
    ref: Ref[Any] = tracer.call(step, (), {"digest": version.digest})
    tracer.consumes[ref.node] = Consumed(version, url)
    return ref


# ---------------------------------------------------------------------------------------------
# what a run does (called by the driver only for plans that publish or consume)
# ---------------------------------------------------------------------------------------------
def prepare(plan: TracedPlan, store: Any, keys: KeyMaker) -> None:
    """Before a run: check the run's store holds every consumed version's object and record
    the cache entry that answers each ``mk.artifact`` node with it.

    Raises
    ------
    RegistryError
        The run's store lacks a consumed version's object (both stores are named).
    """
    import time

    from mlflowkit.cache import Cache
    from mlflowkit.hashing import hash_value
    from mlflowkit.records import CacheEntry

    cache = Cache(store)
    for node_name, consumed in plan.consumes.items():
        version = consumed.version
        if not store.has(version.digest):
            raise RegistryError(
                f"{version.spec} was resolved while planning in store {consumed.store_url}, "
                f"but the run's store {store.url} lacks its object {version.digest[:12]}. Run "
                f"with store={consumed.store_url!r}, or plan with mk.artifact(..., store=...) "
                f"pointing at the store you run on.",
                name=version.name,
            )
        node = plan.nodes[node_name]
        key = keys.key(node.step, {"digest": hash_value(version.digest)})
        entry = cache.lookup(key)
        if entry is None or entry.output_digest != version.digest:
            cache.record(
                CacheEntry(
                    key=key,
                    output_digest=version.digest,
                    step=node.step.qualified_name,
                    stored=True,
                    created_at=time.time(),
                )
            )


def consumed_record(plan: TracedPlan) -> list[dict[str, Any]]:
    """The consumed versions as a run record keeps them."""
    return [
        {
            "node": node,
            "name": c.version.name,
            "version": c.version.version,
            "digest": c.version.digest,
        }
        for node, c in plan.consumes.items()
    ]


def check_publish(plan: TracedPlan, store: Any) -> None:
    """Before a run that publishes: raise ``AccessDenied`` unless this process's key holds
    ``publisher`` in the namespace of every name the plan publishes (no cryptography)."""
    for item in plan.publishes:
        signed.require(store, "publisher", item.name)


def publish_results(
    plan: TracedPlan,
    digests: dict[str, str],
    values: dict[str, Any],
    store: Any,
    run_id: str,
    metrics: dict[str, float] | None = None,
) -> tuple[dict[str, ArtifactVersion], bool]:
    """After a run succeeded: make a version of each published value.

    ``values`` are the in-memory handles of the run's nodes (to store a published value that
    is not in the store yet); ``metrics`` the run's (its record is not written yet, so new
    versions take them from here). Returns the versions by name, and whether any is new.
    """
    from mlflowkit.executors.base import InMemory
    from mlflowkit.hashing import hash_value
    from mlflowkit.placeholders import map_leaves
    from mlflowkit.plan import Ref

    check_publish(plan, store)  # again: the policy may have changed during the run
    idx = db.index_of(store)
    out: dict[str, ArtifactVersion] = {}
    made = False
    for item in plan.publishes:
        value = item.value
        if isinstance(value, Ref):
            digest = digests[value.node]
            if not store.has(digest):
                handle = values.get(value.node)
                if not isinstance(handle, InMemory):
                    raise RegistryError(
                        f"mk.publish({item.name!r}) at {item.location}: the value of step "
                        f"{value.node!r} is neither stored nor in memory; publish the output "
                        f"of a step with cache=True",
                        name=item.name,
                    )
                store.put(handle.value, digest)
        else:
            value = map_leaves(
                value, Ref, lambda r: _value_of(r, digests, values, store)
            )  # a structure holding step outputs: publish the assembled value
            digest = hash_value(value)
            if not store.has(digest):
                store.put(value, digest)
        latest = db.latest(idx, item.name, store)
        if latest is not None and latest.digest == digest:
            out[item.name] = latest  # a cached re-run: nothing to write
            continue
        version, new = db.insert_version(
            idx, item.name, digest, run_id=run_id, metadata=item.metadata, store=store
        )
        made = made or new
        if new:
            signed.audit(store, "publish", version.spec, {"digest": digest, "run_id": run_id})
        if new and metrics:
            version = replace(version, metrics=dict(metrics))
        out[item.name] = version
    return out, made


def _value_of(ref: Ref[Any], digests: dict[str, str], values: dict[str, Any], store: Any) -> Any:
    from mlflowkit.executors.base import InMemory

    handle = values.get(ref.node)
    if isinstance(handle, InMemory):
        return handle.value
    return store.get(digests[ref.node])


def git_clean(cwd: str | None = None) -> bool | None:
    """Whether the git work tree holding ``cwd`` has no uncommitted changes to tracked files
    (None when not in a git tree, or git is not available)."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd or os.getcwd(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() == ""
