"""``Store``: the public artifact store, ``mk.Store``, on any fsspec filesystem.

Layer 6: a facade. The store itself is :class:`~mlflowkit.store.core.StoreCore` (layer 5),
made of two seams, its objects (:mod:`mlflowkit.store.objects`) and its index
(:mod:`mlflowkit.store.index`); see that module for the layout, formats and guarantees.
``Store`` adds what needs the layers above a store: lineage graphs (``mlflowkit.lineage``),
metrics frames (``mlflowkit.tracking``), named artifacts and stages (``mlflowkit.registry``,
which reaches the store only through ``store.seams``) and governance (``_governance``).

Invariants:

* Every method of the ``ArtifactStore`` contract is the core's, unchanged: the facade adds
  methods and extends ``verify`` (registry records) and ``gc`` (named versions are pinned),
  never changes a read or a write.
* A ``Store`` pickles as its URL and options, and is opened again on unpickling.
* The registry, lineage and tracking are imported only when one of their methods is called.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mlflowkit.errors import StoreError
from mlflowkit.store._governance import Governance
from mlflowkit.store.base import ArtifactStore
from mlflowkit.store.core import ObjectInfo, StoreCore
from mlflowkit.store.layout import DEFAULT_URL, NAME

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd

    from mlflowkit.registry.records import ArtifactVersion, Promotion
    from mlflowkit.store._gc import GcReport


__all__ = ["DEFAULT_URL", "ObjectInfo", "Store", "open_store"]


class Store(Governance, StoreCore):
    """The artifact store: objects, cache entries, run records, locks, lineage.

    Parameters
    ----------
    url:
        A local folder, ``file://`` URL or any fsspec URL (``memory://x``, ``s3://bucket/p``).
        Default: ``$MLFLOWKIT_STORE``, else ``./.mlflowkit`` (made absolute at construction).
    index:
        Where runs, cache entries, versions, stages and the audit are indexed: None (default)
        for SQLite, beside a local store's files (for a remote store, in a local cache folder);
        or a PostgreSQL URL (``postgresql://user@host:port/database``) shared by every machine
        of a team. The password goes in ``PGPASSWORD`` or ``~/.pgpass`` (libpq's conventions),
        not in code; it is never shown in a message.
    durable:
        Flush written files to stable storage on local disks (default), as a group commit:
        in the background within ``sync_interval`` seconds and at interpreter exit, and at
        once on ``sync()``. ``False`` never flushes: writes stay atomic and verified, but a power
        failure may lose the most recent ones; for throwaway stores.
    sync_interval:
        Seconds between a write and its background flush (index rows and, if durable, data).
    lock_lease:
        Seconds a single-flight lock file stays valid without its holder's heartbeat. Only
        stores that lock with files use it (a remote store with the SQLite index, a local one
        on Windows): a local store's locks are the kernel's, and a PostgreSQL index's the
        database's; both are released the moment their holder dies.
    key:
        The signing key of this process's writes: a key name (in the keys folder) or the path
        of a ``.key`` file. Default: ``$MLFLOWKIT_KEY``, else the key ``default`` (made on
        first use). See :mod:`mlflowkit.store._trust`.
    **storage_options:
        Passed to the fsspec filesystem (credentials, endpoint, ...).
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _reopen,
            (
                self.url,
                self.durable,
                self.lock_lease,
                self._storage_options,
                self.sync_interval,
                self._key,
                self.index_url,
            ),
        )

    def __enter__(self) -> Store:
        return self

    def metrics(self, pipeline: str | None = None) -> pd.DataFrame:
        """One row per run, to compare experiments: see :func:`mlflowkit.tracking.metrics_frame`.

        Columns ``run_id``, ``pipeline``, ``status``, ``started_at``, ``param.<name>`` per
        pipeline parameter and ``<step>.<metric>`` per metric logged; oldest run first.
        """
        from mlflowkit.tracking import metrics_frame

        return metrics_frame(self.runs(), pipeline)

    def lineage(self, digest: str) -> nx.DiGraph:
        """Artifacts, step runs and runs upstream of ``digest``, across runs.

        ``digest`` may be a unique prefix of a known digest. See
        :func:`mlflowkit.lineage.build_lineage` for the graph's nodes and attributes.
        """
        from mlflowkit.lineage import build_lineage

        idx = self._synced()
        run_ids = idx.upstream_runs(digest)
        if not run_ids and not (NAME.fullmatch(digest) and self.has(digest)):
            found = idx.digests_with_prefix(digest)
            if len(found) > 1:
                raise StoreError(
                    f"digest prefix {digest!r} is ambiguous: {', '.join(found[:10])}",
                    digest=digest,
                    url=self.url,
                )
            if not found:
                raise StoreError(
                    f"no run produced, and the store does not hold, digest {digest!r} "
                    f"(store {self.url}); check the digest with `mlflowkit runs show`",
                    digest=digest,
                    url=self.url,
                )
            digest = found[0]
            run_ids = idx.upstream_runs(digest)
        return build_lineage(idx.run_records(run_ids), digest)

    def verify(self) -> list[str]:
        """Check every stored object and signed record; return what fails.

        An object is corrupt when its header or payload fails its checksum, when its header
        names another address, or when its value (deserialized) does not hash to the digest
        it is stored under. A value whose serializer or hasher is not registered in this
        process is checked up to its bytes. Corrupt objects are quarantined and listed by
        digest (first, sorted).

        Then come lines (``"untrusted object <digest>: <why>"``, ``"untrusted cache entry
        ..."``, ``"policy version ..."``, ``"audit entry ..."``, ``"untrusted artifact
        version ..."``, ``"untrusted promotion ..."``, ``"untrusted registry file ..."``) for
        every object that can run code, cache entry or pack whose signature is missing,
        invalid or made by a key that may not write here, every policy version that does not
        count, every break in the audit chain, and every artifact version or promotion whose
        record is unsigned, forged or made by a key without the role (readers ignore it).
        Untrusted objects are quarantined too, never deserialized (adopt a store made by an
        earlier version *before* verifying it: ``adopt``); the other records are left in
        place and never used.

        Raises
        ------
        StoreError
            There is no store at this url.
        """
        from mlflowkit.registry.verify import findings as registry_findings

        return super().verify() + registry_findings(self)

    def gc(
        self,
        *,
        keep_last: int = 10,
        pins: Iterable[str] | None = None,
        older_than: float | None = None,
        dry_run: bool = False,
    ) -> GcReport:
        """Delete objects and cache entries that neither recent runs nor pins reference.

        Parameters
        ----------
        keep_last:
            Keep everything the newest ``keep_last`` runs reference (their steps' keys,
            inputs and outputs, and their output template).
        pins:
            Digests to keep regardless; the ``pins`` of every run record are kept too.
        older_than:
            Only delete files at least this many seconds old (protects a run in flight
            elsewhere that has not written its record yet).
        dry_run:
            Report what would be deleted, delete nothing.

        Notes
        -----
        Run records are kept (they are small); an old run's output may no longer load. The
        objects of named artifact versions are always kept.
        Quarantined objects and stale temp files are deleted too, and cache packs when
        anything else was.

        Safe while runs are in progress: a live run (marked ``running``, its owner alive; on
        another host, for up to a day) holds a lease, and gc keeps every file written since
        it started, what the last finished run of its pipeline used and what the cache packs
        list (where it finds its cache hits).

        Raises
        ------
        StoreError
            ``keep_last`` is negative, or there is no store at this url.
        """
        # every version of a named artifact is kept, however old the run that made it
        pins = [*(pins or ()), *self._idx().published_digests()]
        return super().gc(keep_last=keep_last, pins=pins, older_than=older_than, dry_run=dry_run)

    # named artifacts (the registry lives in ``mlflowkit.registry``) --------------------------
    def publish(
        self, name: str, value: Any, *, metadata: dict[str, Any] | None = None
    ) -> ArtifactVersion:
        """Store ``value`` and make it the next version of the artifact ``name``.

        Publishing content equal to the latest version's (same digest) makes no new version
        and returns the latest. A new version's record is signed by this store's key (its
        ``created_by``) and audited. See :doc:`/concepts/artifacts`.

        Raises
        ------
        AccessDenied
            This store's key lacks ``publisher`` in the name's namespace (nothing is written).
        RegistryError
            An invalid name or metadata that is not JSON.
        """
        from mlflowkit.registry.versions import publish

        return publish(self, name, value, metadata=metadata)

    def artifacts(self) -> list[str]:
        """Every artifact name with at least one version, sorted."""
        from mlflowkit.registry.versions import artifacts

        return artifacts(self)

    def versions(self, name: str) -> list[ArtifactVersion]:
        """Every version of ``name``, oldest first (empty for an unknown name)."""
        from mlflowkit.registry.versions import versions

        return versions(self, name)

    def artifact(self, spec: str) -> ArtifactVersion:
        """The version ``spec`` names: ``"name"`` (latest), ``"name@3"``, ``"name@mvp"``.

        Raises
        ------
        RegistryError
            Unknown name, version or stage; the message lists what exists.
        """
        from mlflowkit.registry.versions import artifact

        return artifact(self, spec)

    def promote(
        self,
        spec: str,
        *,
        to: str,
        reason: str = "",
        gates: Iterable[Any] = (),
    ) -> Promotion:
        """Move stage ``to`` of an artifact to the version ``spec`` names, if every gate passes.

        Needs ``promoter`` for the name's namespace and stage ``to`` (else ``AccessDenied``);
        the promotion is signed by this store's key (its ``by``) and audited. See
        :func:`mlflowkit.registry.stages.promote`.
        """
        from mlflowkit.registry.stages import promote

        return promote(self, spec, to=to, reason=reason, gates=gates)

    def stage(self, name: str, stage: str) -> ArtifactVersion | None:
        """The version of ``name`` holding ``stage`` now, or None."""
        from mlflowkit.registry.stages import stage_holder

        return stage_holder(self, name, stage)

    def history(self, name: str) -> list[Promotion]:
        """Every promotion of ``name``, oldest first."""
        from mlflowkit.registry.stages import history

        return history(self, name)


def _reopen(
    url: str,
    durable: bool,
    lock_lease: float,
    storage_options: dict[str, Any],
    sync_interval: float = 1.0,
    key: str | os.PathLike[str] | None = None,
    index: str | None = None,
) -> Store:
    return Store(
        url,
        index=index,
        durable=durable,
        lock_lease=lock_lease,
        sync_interval=sync_interval,
        key=key,
        **storage_options,
    )


def open_store(
    store: Store | str | os.PathLike[str] | None = None, **storage_options: Any
) -> Store:
    """A store from a ``Store`` (returned as is), a URL or path, or None (the default store).

    ``storage_options`` go to a store opened from a URL. Another implementation of
    :class:`~mlflowkit.store.base.ArtifactStore` (a test double, a plugin) is returned unchanged.

    Raises
    ------
    StoreError
        ``store`` is none of these.
    """
    if store is None or isinstance(store, (str, os.PathLike)):
        return Store(store, **storage_options)
    if isinstance(store, (Store, ArtifactStore)):  # another implementation: as it is
        return store
    raise StoreError(
        f"expected a Store, a URL string or None for store=, got {type(store).__qualname__}"
    )
