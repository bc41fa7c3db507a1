"""Lineage: the graph of artifacts, step runs and runs upstream of one artifact.

Built from run records alone (the store picks the relevant ones through its index), so it works
the same on any store. Three kinds of nodes, told apart by the ``kind`` attribute:

* ``"artifact"``: node id is the content digest (str). Attributes: ``digest``, ``names`` (display
  names of the step calls that produced it, sorted), ``keys`` (their cache keys), ``params``
  (parameter names it was passed as).
* ``"step"``: node id is ``(run_id, step display name)``. Attributes: ``name``, ``step``
  (identity ``module:qualname``), ``run_id``, ``key``, ``status``, ``attempts``,
  ``duration_s``, ``code_digest``, ``output_digest``, ``error``.
* ``"run"``: node id is the run id (str). Attributes: ``run_id``, ``pipeline``, ``status``,
  ``started_at``, ``finished_at``, ``executor``.

Edges: input artifact → step run (``param``), step run → output artifact, step run → run
(``kind="member"``).

Invariants: only what is upstream of the requested digest is in the graph; every step run that
produced an artifact is included (the one that executed it and those that found it cached, in
any run), so an artifact made in one run and used in another links the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

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
    for record in records:
        for s in record.steps:
            if s.output_digest:
                producers.setdefault(s.output_digest, []).append((record, s))

    graph = nx.DiGraph()
    _add_artifact(graph, digest)
    frontier = [digest]
    seen = {digest}
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
            for param, src in sources:
                _add_artifact(graph, src)
                graph.nodes[src]["params"] = sorted({*graph.nodes[src]["params"], param})
                graph.add_edge(src, node, kind="input", param=param)
                if src not in seen:
                    seen.add(src)
                    frontier.append(src)
    return graph


def _add_artifact(graph: nx.DiGraph, digest: str) -> None:
    if digest not in graph:
        graph.add_node(digest, kind="artifact", digest=digest, names=[], keys=[], params=[])
