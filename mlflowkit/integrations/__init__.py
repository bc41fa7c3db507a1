"""Bridges to the tools ML teams already use: MLflow (export) and OpenLineage (events).

Each bridge is an optional extra (``pip install 'mlflowkit[mlflow]'``,
``'mlflowkit[openlineage]'``) in its own module, imported only when used: importing
``mlflowkit`` or ``mlflowkit.integrations`` never imports MLflow or OpenLineage. The bridges
read run records (``mlflowkit.records``), never the store's files.

``lineage_emitter`` is what a run calls, once, to learn whether OpenLineage events are wanted:
it looks only at the OpenLineage client's own configuration conventions (environment
variables and ``openlineage.yml`` files) and imports nothing unless they are there.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflowkit.plan import TracedPlan
    from mlflowkit.records import RunRecord
    from mlflowkit.store.base import ArtifactStore

__all__ = ["lineage_emitter", "openlineage_configured"]


def openlineage_configured() -> bool:
    """Whether the OpenLineage client is configured by its own conventions.

    True when ``OPENLINEAGE_URL`` is set, a transport is set by ``OPENLINEAGE__TRANSPORT...``
    variables, or an ``openlineage.yml`` is found (``$OPENLINEAGE_CONFIG``, the current folder,
    ``~/.openlineage/``); False whenever ``OPENLINEAGE_DISABLED=true``. A few environment
    lookups and at most three file checks (a few microseconds): cheap enough for every run.
    """
    env = os.environ
    if env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OPENLINEAGE_URL"):
        return True
    if "OPENLINEAGE__TRANSPORT__TYPE" in env or "OPENLINEAGE__TRANSPORT" in env:
        return True  # a transport set by the client's OPENLINEAGE__... variables
    config = env.get("OPENLINEAGE_CONFIG")
    if config and os.path.isfile(config):
        return True
    return os.path.isfile("openlineage.yml") or os.path.isfile(_home_config(env.get("HOME")))


@functools.lru_cache(maxsize=4)
def _home_config(home: str | None) -> str:
    """``~/.openlineage/openlineage.yml`` for this ``$HOME``."""
    return os.path.join(os.path.expanduser("~"), ".openlineage", "openlineage.yml")


def lineage_emitter(plan: TracedPlan, store: ArtifactStore, record: RunRecord) -> Any:
    """The OpenLineage emitter of one run, or None when OpenLineage is not configured.

    Configured but not installed: a warning says how to install it, and the run goes on
    without events.
    """
    if not openlineage_configured():
        return None
    try:
        from mlflowkit.integrations.openlineage import RunEmitter
    except ImportError as exc:
        warnings.warn(
            f"OpenLineage is configured (OPENLINEAGE_URL or an openlineage.yml), but its client "
            f"cannot be imported ({exc}): this run emits no lineage events. Install it with "
            f"pip install 'mlflowkit[openlineage]', or set OPENLINEAGE_DISABLED=true.",
            UserWarning,
            stacklevel=4,
        )
        return None
    return RunEmitter(plan, store, record)
