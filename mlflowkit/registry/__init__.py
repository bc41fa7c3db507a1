"""Named artifacts: versions shared between pipelines, stages, gates and promotions.

Layer 5, above the store contracts: the registry keeps its records in the store's index
(``registry.db``) and its values as ordinary store objects. Nothing here is imported by a run
that neither publishes nor consumes a named artifact.

Modules: ``names`` (validation, specs, stages), ``records`` (``ArtifactVersion``,
``Promotion``, ``GateResult``), ``db`` (the tables and transactions), ``journal`` (the
records as store files), ``signed`` (roles, signing and judging records), ``verify`` (what
``store.verify`` reports), ``versions`` (publish and look up), ``stages`` (promote,
history), ``gates`` (declared and built-in gates), ``pipeline`` (``mk.publish`` /
``mk.artifact`` while planning, and what a run does with them), ``reproduce`` (re-executing
a past run).
"""

from mlflowkit.registry.names import STAGES
from mlflowkit.registry.records import ArtifactVersion, GateResult, Promotion

__all__ = ["STAGES", "ArtifactVersion", "GateResult", "Promotion"]
