from __future__ import annotations

import json
import subprocess
import sys

import mlflowkit as mk

# The curated public surface (API.md). Changing it is a deliberate act: update this list.
PUBLIC = [
    "STAGES",
    "ArtifactVersion",
    "AccessDenied",
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


def test_all_is_pinned_and_every_name_resolves() -> None:
    assert sorted(mk.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(mk, name) is not None


def test_error_tree() -> None:
    for name in (
        "PlanningError",
        "WiringError",
        "TypeCheckError",
        "InputMutationError",
        "HashingError",
        "SerializationError",
        "StoreError",
        "ExecutorError",
        "RunFailed",
        "RegistryError",
        "TrackingError",
        "AccessDenied",
    ):
        assert issubclass(getattr(mk, name), mk.MlflowkitError)
    assert issubclass(mk.WiringError, mk.PlanningError)
    assert issubclass(mk.CorruptObjectError, mk.StoreError)
    assert issubclass(mk.MissingObjectError, mk.StoreError)
    assert issubclass(mk.GateFailed, mk.RegistryError)
    assert issubclass(mk.UntrustedObjectError, mk.StoreError)


def test_import_is_light() -> None:
    code = (
        "import sys, json, mlflowkit\n"
        "heavy = ['dask', 'distributed', 'cupy', 'numba', 'pandas', 'pyarrow', 'sklearn', 'rich',\n"
        "         'mlflow', 'openlineage', 'matplotlib', 'cryptography',\n"
        "         'decimal', 'fractions', 'mlflowkit.store._gc', 'mlflowkit.trust.audit']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
