"""mlflowkit: typed, cached, reproducible ML pipelines from plain Python functions.

The curated public names live here (pinned by a test of ``__all__``). Importing mlflowkit is
light: no dask, distributed, cupy, numba or pandas; those load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflowkit import driver as _runner  # noqa: F401

# The run machinery (scheduler, cache keys, store, hashing, the default executor) loads here,
# not in the first run: it costs ~15 ms either way, and paying it at import makes the first run
# of a process as fast as the next (a fully cached re-run in a fresh process is timed from the
# run call).
from mlflowkit import hashing as _hashing  # noqa: F401
from mlflowkit import store as _store  # noqa: F401
from mlflowkit.errors import (
    AccessDenied,
    CorruptObjectError,
    ExecutorError,
    GateFailed,
    HashingError,
    InputMutationError,
    MissingObjectError,
    MlflowkitError,
    PlanningError,
    RegistryError,
    RunFailed,
    SerializationError,
    StoreError,
    TrackingError,
    TypeCheckError,
    UntrustedObjectError,
    WiringError,
)
from mlflowkit.executors import local as _local  # noqa: F401
from mlflowkit.executors.base import Executor
from mlflowkit.pipelines import Pipeline, Plan, pipeline
from mlflowkit.plan import Ref
from mlflowkit.records import StepRun
from mlflowkit.run import Run
from mlflowkit.step import Step, step
from mlflowkit.stepcall import current, rng
from mlflowkit.tracking import log_metric, log_metrics
from mlflowkit.version import __version__

if TYPE_CHECKING:
    from mlflowkit import executors as executors
    from mlflowkit.files import Dir as Dir
    from mlflowkit.files import File as File
    from mlflowkit.hashing import hash_value as hash_value
    from mlflowkit.hashing import register_hasher as register_hasher
    from mlflowkit.registry import STAGES as STAGES
    from mlflowkit.registry import ArtifactVersion as ArtifactVersion
    from mlflowkit.registry import GateResult as GateResult
    from mlflowkit.registry import Promotion as Promotion
    from mlflowkit.registry import gates as gates
    from mlflowkit.registry.artifacts import artifact as artifact
    from mlflowkit.registry.gates import gate as gate
    from mlflowkit.registry.pipeline import publish as publish
    from mlflowkit.registry.reproduce import Reproduction as Reproduction
    from mlflowkit.registry.reproduce import reproduce as reproduce
    from mlflowkit.store import Store as Store
    from mlflowkit.trust.audit import AuditEntry as AuditEntry

__all__ = [
    "STAGES",
    "AccessDenied",
    "ArtifactVersion",
    "AuditEntry",
    "CorruptObjectError",
    "Dir",
    "Executor",
    "ExecutorError",
    "File",
    "GateFailed",
    "GateResult",
    "HashingError",
    "InputMutationError",
    "MissingObjectError",
    "MlflowkitError",
    "Pipeline",
    "Plan",
    "PlanningError",
    "Promotion",
    "Ref",
    "RegistryError",
    "Reproduction",
    "Run",
    "RunFailed",
    "SerializationError",
    "Step",
    "StepRun",
    "Store",
    "StoreError",
    "TrackingError",
    "TypeCheckError",
    "UntrustedObjectError",
    "WiringError",
    "__version__",
    "artifact",
    "current",
    "executors",
    "gate",
    "gates",
    "hash_value",
    "log_metric",
    "log_metrics",
    "pipeline",
    "publish",
    "register_hasher",
    "reproduce",
    "rng",
    "step",
]

_LAZY = {
    "AuditEntry": ("mlflowkit.trust.audit", "AuditEntry"),
    "Dir": ("mlflowkit.files", "Dir"),
    "File": ("mlflowkit.files", "File"),
    "Store": ("mlflowkit.store", "Store"),
    "hash_value": ("mlflowkit.hashing", "hash_value"),
    "register_hasher": ("mlflowkit.hashing", "register_hasher"),
    "executors": ("mlflowkit.executors", None),
    # named artifacts: loaded on first use (a pipeline that never names one never pays)
    "STAGES": ("mlflowkit.registry.names", "STAGES"),
    "ArtifactVersion": ("mlflowkit.registry.records", "ArtifactVersion"),
    "GateResult": ("mlflowkit.registry.records", "GateResult"),
    "Promotion": ("mlflowkit.registry.records", "Promotion"),
    "gate": ("mlflowkit.registry.gates", "gate"),
    "gates": ("mlflowkit.registry.gates", None),
    "artifact": ("mlflowkit.registry.artifacts", "artifact"),
    "publish": ("mlflowkit.registry.pipeline", "publish"),
    "Reproduction": ("mlflowkit.registry.reproduce", "Reproduction"),
    "reproduce": ("mlflowkit.registry.reproduce", "reproduce"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mlflowkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
