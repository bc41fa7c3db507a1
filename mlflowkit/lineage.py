"""Lineage: the graph of artifacts, step runs and runs upstream of one artifact.

Built from run records alone (the store picks the relevant ones through its index), so it works
the same on any store. Three kinds of nodes, told apart by the ``kind`` attribute:

* ``"artifact"``: node id is the content digest (str). Attributes: ``digest``, ``names`` (display
  names of the step calls that produced it, sorted), ``keys`` (their cache keys), ``params``
  (parameter names it was passed as). A value whose digest is that of a pipeline parameter of a
  run that used it also has ``value`` (the parameter's value, from the run record) and
  ``parameters`` (the names of the pipeline parameters with that value).
* ``"step"``: node id is ``(run_id, step display name)``. Attributes: ``name``, ``step``
  (identity ``module:qualname``), ``run_id``, ``key``, ``status``, ``attempts``,
  ``duration_s``, ``code_digest``, ``output_digest``, ``error``, ``internal`` (an item,
  attribute or gather: ``StepRun.internal``), ``inputs`` (``(parameter, digest)`` pairs in
  order, each value of a structure of upstream values included) and ``position`` (its index
  in the run's steps, a topological order).
* ``"run"``: node id is the run id (str). Attributes: ``run_id``, ``pipeline``, ``status``,
  ``started_at``, ``finished_at``, ``executor``, ``params`` (the pipeline's parameters).

Edges: input artifact → step run (``param``), step run → output artifact, step run → run
(``kind="member"``).

Artifacts are content: equal values are one node, so a small value (``0``, ``1``) can be both a
step's output and another step's plain argument. A step's input came from a producer only if
that producer is in the same run, earlier (``position``); readers that need the wiring
(``mlflowkit lineage``) check that.

Invariants: only what is upstream of the requested digest is in the graph; every step run that
produced an artifact is included (the one that executed it and those that found it cached, in
any run), so an artifact made in one run and used in another links the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mlflowkit.records import RunRecord, StepRun

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["build_lineage"]


def build_lineage(records: Iterable[RunRecord], digest: str) -> nx.DiGraph:
    """The lineage graph of ``digest`` from these run records.

    Parameters
    ----------
    records:
        Run records to search (more than needed is fine; unrelated steps are left out).
    digest:
        The artifact whose upstream is wanted; it is always a node, even with no producer.

    Returns
    -------
    networkx.DiGraph
        See the module docstring for nodes, attributes and edges.
    """
    import networkx as nx

    producers: dict[str, list[tuple[RunRecord, StepRun]]] = {}
    positions: dict[tuple[str, str], int] = {}
    for record in records:
        for i, s in enumerate(record.steps):
            if s.output_digest:
                producers.setdefault(s.output_digest, []).append((record, s))
                positions[record.id, s.name] = i

    graph = nx.DiGraph()
    _add_artifact(graph, digest)
    frontier = [digest]
    seen = {digest}
    param_digests: dict[str, dict[str, tuple[list[str], Any]]] = {}  # run id -> digest -> ...
    while frontier:
        d = frontier.pop()
        for record, s in producers.get(d, []):
            node = (record.id, s.name)
            if node not in graph:
                graph.add_node(
                    node,
                    kind="step",
                    name=s.name,
                    step=s.step,
                    run_id=record.id,
                    key=s.key,
                    status=s.status,
                    attempts=s.attempts,
                    duration_s=s.duration_s,
                    code_digest=s.code_digest,
                    output_digest=s.output_digest,
                    error=s.error,
                    internal=s.internal,
                    inputs=[],
                    position=positions[node],
                )
            if record.id not in graph:
                graph.add_node(
                    record.id,
                    kind="run",
                    run_id=record.id,
                    pipeline=record.pipeline,
                    status=record.status,
                    started_at=record.started_at,
                    finished_at=record.finished_at,
                    executor=record.executor,
                    params=dict(record.params),
                )
            graph.add_edge(node, record.id, kind="member")
            graph.add_edge(node, d, kind="output")
            attrs = graph.nodes[d]
            attrs["names"] = sorted({*attrs["names"], s.name})
            if s.key:
                attrs["keys"] = sorted({*attrs["keys"], s.key})
            sources = [
                (param, src)
                for param, src in sorted(s.inputs.items())
                if isinstance(src, str) and param not in s.upstream
            ]
            # a structure of upstream values (a list of Refs, a fan-out's gather): each value
            sources += [(p, src) for p, srcs in sorted(s.upstream.items()) for src in srcs]
            graph.nodes[node]["inputs"] = [  # in the step's parameter order
                (p, src)
                for p in [*s.inputs, *(u for u in s.upstream if u not in s.inputs)]
                for src in s.upstream.get(p, [s.inputs.get(p)])
                if isinstance(src, str)
            ]
            if record.id not in param_digests:
                param_digests[record.id] = _param_digests(record.params)
            for param, src in sources:
                _add_artifact(graph, src)
                attrs = graph.nodes[src]
                attrs["params"] = sorted({*attrs["params"], param})
                graph.add_edge(src, node, kind="input", param=param)
                given = param_digests[record.id].get(src)
                if given is not None:
                    names, value = given
                    attrs["value"] = value
                    attrs["parameters"] = sorted({*attrs.get("parameters", []), *names})
                if src not in seen:
                    seen.add(src)
                    frontier.append(src)
    return graph


def _param_digests(params: dict[str, Any]) -> dict[str, tuple[list[str], Any]]:
    """Digest of each pipeline parameter's value -> (the parameters' names, the value).

    A plain step argument's digest is ``hash_value`` of the value, so a step input with one of
    these digests was given that value (a parameter's, or an equal one).
    """
    from mlflowkit.errors import MlflowkitError
    from mlflowkit.hashing import hash_value

    found: dict[str, tuple[list[str], Any]] = {}
    for name, value in params.items():
        try:
            digest = hash_value(value)
        except (MlflowkitError, RecursionError, ValueError, TypeError):  # a value kept as text
            continue
        names, _ = found.setdefault(digest, ([], value))
        names.append(name)
    return found


def _add_artifact(graph: nx.DiGraph, digest: str) -> None:
    if digest not in graph:
        graph.add_node(digest, kind="artifact", digest=digest, names=[], keys=[], params=[])
