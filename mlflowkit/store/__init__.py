"""The artifact store: content-addressed objects, cache entries, run records and lineage.

``Store`` implements the :class:`~mlflowkit.store.base.ArtifactStore` contract on any fsspec
filesystem. It is a facade (:mod:`mlflowkit.store.fsspec`) over ``StoreCore``
(:mod:`mlflowkit.store.core`), which stands on two seams: its files
(:mod:`mlflowkit.store.objects`) and its index (:mod:`mlflowkit.store.index`). Importing this
package stays light: fsspec, pandas, pyarrow and networkx are imported only when a store is
opened or a value of theirs is seen.
"""

from typing import TYPE_CHECKING, Any

from mlflowkit.store.base import ArtifactStore
from mlflowkit.store.fsspec import ObjectInfo, Store, open_store
from mlflowkit.store.serializers import (
    Serializer,
    register_serializer,
    serializer_names,
    unregister_serializer,
)

if TYPE_CHECKING:
    from mlflowkit.store._gc import GcReport

__all__ = [
    "ArtifactStore",
    "GcReport",
    "ObjectInfo",
    "Serializer",
    "Store",
    "open_store",
    "register_serializer",
    "serializer_names",
    "unregister_serializer",
]


def __getattr__(name: str) -> Any:
    if name == "GcReport":  # with the collector, which only ``Store.gc`` loads
        from mlflowkit.store._gc import GcReport

        return GcReport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
