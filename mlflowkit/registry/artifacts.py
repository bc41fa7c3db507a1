"""``mk.artifact``: a pipeline's reference to a version of a named artifact.

Layer 6: it opens the store by name (``mk.Store``, the facade), then hands the work to
:func:`mlflowkit.registry.pipeline.consume`, which only needs an opened store.
"""

from __future__ import annotations

from typing import Any

from mlflowkit.plan import Ref
from mlflowkit.registry.pipeline import consume

__all__ = ["artifact"]


def artifact(spec: str, store: Any = None) -> Ref[Any]:
    """A ``Ref`` to a version of a named artifact, resolved now, while planning.

    Parameters
    ----------
    spec:
        ``"name"`` (the latest version), ``"name@3"`` or ``"name@mvp"``.
    store:
        Where to look it up: a ``Store``, a URL, or None for the default store
        (``$MLFLOWKIT_STORE``, else ``./.mlflowkit``).

    Raises
    ------
    RegistryError
        Unknown name, version or stage (what exists is listed), or a call outside a pipeline.
    """

    def open_it() -> Any:
        from mlflowkit.store import open_store

        return open_store(store)

    return consume(spec, open_it)
