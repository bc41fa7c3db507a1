"""Artifact names and specs: what is accepted, and how a refusal reads."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mlflowkit as mk
from mlflowkit.registry.names import Spec, check_name, parse_spec, stage_below

_VALID = re.compile(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*")


@given(st.text(alphabet="abcXYZ019._-/@ ü", max_size=140))
def test_a_name_is_accepted_exactly_when_it_fits_the_rule(name: str) -> None:
    ok = len(name) <= 128 and _VALID.fullmatch(name) is not None
    if ok:
        assert check_name(name) == name
    else:
        with pytest.raises(mk.RegistryError, match=re.escape(repr(name)[:20])):
            check_name(name)


def test_a_refusal_suggests_a_name() -> None:
    with pytest.raises(mk.RegistryError, match=r"e\.g\. 'digits-model'"):
        check_name("Digits Model")


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("m", Spec("m")),
        ("m@3", Spec("m", version=3)),
        ("ns/m@mvp", Spec("ns/m", stage="mvp")),
        ("m@poc", Spec("m", stage="poc")),
    ],
)
def test_specs(spec: str, parsed: Spec) -> None:
    assert parse_spec(spec) == parsed
    assert str(parsed) == spec


@pytest.mark.parametrize("spec", ["m@", "m@-1", "m@production", "M@1", "m@1@2", "m@٣"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(mk.RegistryError):
        parse_spec(spec)


def test_stage_order() -> None:
    assert [stage_below(s) for s in mk.STAGES] == [None, "poc", "prototype"]


def test_a_version_not_read_from_a_store_cannot_load() -> None:
    v = mk.ArtifactVersion("m", 1, "0" * 64, None, "2026-01-01T00:00:00+00:00")
    with pytest.raises(mk.RegistryError, match=r"store.artifact\('m@1'\).load\(\)"):
        v.load()
    assert v.to_dict()["metrics"] == {} and v.spec == "m@1"
