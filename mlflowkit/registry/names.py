"""Artifact names, version specs and stages: parsing and validation only.

Invariants
----------
* A valid name is 1 to 128 characters of lower-case letters, digits, ``.``, ``_`` and ``-``,
  starting with a letter or digit, optionally under one or more namespaces separated by ``/``
  (``"vision/digits-model"``); the whole name, namespaces included, is at most 128 characters.
* A spec is ``"name"`` (the latest version), ``"name@<int>"`` (one version) or
  ``"name@<stage>"`` (the version holding that stage); anything else raises ``RegistryError``
  saying what was asked and what is accepted.
* ``STAGES`` is ordered from lowest to highest; a stage's rank is its index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlflowkit.errors import RegistryError

__all__ = ["MAX_NAME", "STAGES", "Spec", "check_name", "check_stage", "parse_spec", "stage_below"]

#: the stages of an artifact's life, lowest first
STAGES: tuple[str, str, str] = ("poc", "prototype", "mvp")
MAX_NAME = 128

_PART = r"[a-z0-9][a-z0-9._-]*"
_NAME = re.compile(rf"{_PART}(?:/{_PART})*")


def check_name(name: object) -> str:
    """Return ``name`` when it is a valid artifact name; else raise ``RegistryError``."""
    if not isinstance(name, str):
        raise RegistryError(
            f"artifact name must be a string, got {type(name).__qualname__} ({name!r}). Use a "
            f"name such as 'digits-model' or 'vision/digits-model'.",
            name=None,
        )
    if len(name) > MAX_NAME or _NAME.fullmatch(name) is None:
        why = (
            f"it has {len(name)} characters (at most {MAX_NAME})"
            if len(name) > MAX_NAME
            else "it is empty"
            if not name
            else "it holds characters other than lower-case letters, digits, '.', '_', '-' "
            "(and '/' between a namespace and the name), or a part starts with another character"
        )
        fixed = re.sub(r"[^a-z0-9._/-]+", "-", name.lower()).strip("-/._")[:MAX_NAME]
        hint = f" e.g. {fixed!r}" if fixed and _NAME.fullmatch(fixed) else ""
        raise RegistryError(
            f"invalid artifact name {name!r}: {why}. Expected lower-case letters, digits, '.', "
            f"'_' and '-', at most {MAX_NAME} characters, optionally under a namespace "
            f"('vision/digits-model'). Rename it{hint}.",
            name=name,
        )
    return name


def check_stage(stage: object, *, name: str | None = None) -> str:
    """Return ``stage`` when it is one of ``STAGES``; else raise ``RegistryError``."""
    if not isinstance(stage, str) or stage not in STAGES:
        raise RegistryError(
            f"unknown stage {stage!r}: the stages are {', '.join(STAGES)} (lowest first). "
            f"Use one of those.",
            name=name,
        )
    return stage


def stage_below(stage: str) -> str | None:
    """The stage just below ``stage`` (None for the lowest)."""
    rank = STAGES.index(stage)
    return STAGES[rank - 1] if rank else None


@dataclass(frozen=True)
class Spec:
    """A parsed ``name[@version|@stage]``: at most one of ``version`` and ``stage`` is set."""

    name: str
    version: int | None = None
    stage: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.stage is not None:
            return f"{self.name}@{self.stage}"
        return self.name


def parse_spec(spec: object) -> Spec:
    """Parse ``"name"``, ``"name@3"`` or ``"name@mvp"``.

    Raises
    ------
    RegistryError
        An invalid name, a version that is not a positive integer, or an unknown stage.
    """
    if not isinstance(spec, str):
        raise RegistryError(
            f"expected an artifact spec 'name', 'name@3' or 'name@mvp', got "
            f"{type(spec).__qualname__} ({spec!r})"
        )
    name, sep, tail = spec.partition("@")
    check_name(name)
    if not sep:
        return Spec(name)
    if tail.isdigit() and tail.isascii():
        version = int(tail)
        if version < 1:
            raise RegistryError(
                f"artifact spec {spec!r}: versions are numbered from 1. Use {name}@1 or later.",
                name=name,
            )
        return Spec(name, version=version)
    if tail in STAGES:
        return Spec(name, stage=tail)
    raise RegistryError(
        f"artifact spec {spec!r}: after '@' expected a version number or a stage "
        f"({', '.join(STAGES)}), found {tail!r}. Write e.g. {name}@3 or {name}@mvp.",
        name=name,
    )
