"""The registry's records: ``ArtifactVersion``, ``Promotion`` and ``GateResult``.

Invariants
----------
* Records are frozen dataclasses of plain data (str, int, None, dicts of JSON-able values);
  equality ignores the store a version was read from.
* ``created_at`` and ``at`` are ISO-8601 UTC texts (``2026-12-04T15:20:00.123456+00:00``).
* ``created_by`` and ``by`` are the key id that signed the record (None only for an unsigned
  record of an earlier version, accepted in a store without owner). ``metrics`` is the
  producing run's metrics (``{}`` for a version published outside a run).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflowkit.store.base import ArtifactStore

__all__ = ["ArtifactVersion", "GateResult", "Promotion", "utc_now"]


def utc_now() -> str:
    """The current time as ISO-8601 UTC text."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


@dataclass(frozen=True)
class ArtifactVersion:
    """One version of a named artifact.

    Attributes
    ----------
    name:
        The artifact's name (``"digits-model"``, ``"vision/digits-model"``).
    version:
        Its number: 1, 2, … per name, in publishing order.
    digest:
        The content digest of the value (``mk.hash_value``).
    run_id:
        The run that published it; None when published with ``store.publish`` outside a run.
    created_at:
        When the version was made, ISO-8601 UTC.
    created_by:
        The publisher's key id (it signed the version's record); None for an unsigned record
        made by an earlier version.
    metadata:
        What the publisher attached (``metadata=``).
    metrics:
        The producing run's metrics (``{"<step>.<metric>": value}``, what ``run.metrics``
        gives), so that gates can decide on them; ``{}`` when published outside a run.
    stage:
        The highest stage this version holds now (``"poc"``, ``"prototype"``, ``"mvp"``), or None.
    """

    name: str
    version: int
    digest: str
    run_id: str | None
    created_at: str
    created_by: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    stage: str | None = None
    _store: ArtifactStore | None = field(default=None, compare=False, repr=False)

    @property
    def spec(self) -> str:
        """``"name@version"``: the spec that pins this version."""
        return f"{self.name}@{self.version}"

    def load(self) -> Any:
        """Load the value from the store the version was read from.

        Raises
        ------
        RegistryError
            The version was not read from a store (build it with ``store.artifact(...)``).
        """
        if self._store is None:
            from mlflowkit.errors import RegistryError

            raise RegistryError(
                f"{self.spec} was not read from a store, so it cannot load its value; get it "
                f"with store.artifact({self.spec!r}).load()",
                name=self.name,
            )
        return self._store.get(self.digest)

    def to_dict(self) -> dict[str, Any]:
        """The version as plain JSON-able data (without the store)."""
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "run_id": self.run_id,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "metadata": dict(self.metadata),
            "metrics": dict(self.metrics),
            "stage": self.stage,
        }


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate for one promotion: its name, whether it passed, and why."""

    name: str
    passed: bool
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "message": self.message}


@dataclass(frozen=True)
class Promotion:
    """A recorded promotion: ``version`` of ``name`` moved to ``to_stage``.

    Attributes
    ----------
    name, version:
        The version promoted.
    from_stage:
        The highest stage that version held before (None when it held none).
    to_stage:
        The stage it holds now.
    at:
        When, ISO-8601 UTC.
    by:
        The promoter's key id (it signed the promotion's record); None for an unsigned record
        made by an earlier version.
    reason:
        Why, in the promoter's words (may be empty).
    gates:
        Every gate that was checked, with its outcome.
    """

    name: str
    version: int
    from_stage: str | None
    to_stage: str
    at: str
    by: str | None = None
    reason: str = ""
    gates: tuple[GateResult, ...] = ()
