"""Stages, promotions, gates and history."""

from __future__ import annotations

import pytest

import mlflowkit as mk


def _three(store: mk.Store) -> None:
    for i in range(3):
        store.publish("model", {"v": i})


def test_stages_constant() -> None:
    assert mk.STAGES == ("poc", "prototype", "mvp")


def test_one_rung_at_a_time(store: mk.Store) -> None:
    _three(store)
    with pytest.raises(mk.RegistryError) as info:
        store.promote("model@2", to="prototype")
    text = str(info.value)
    assert "model@2" in text and "'poc'" in text and "store.promote('model@2', to='poc')" in text
    p = store.promote("model@2", to="poc", reason="first try")
    assert (p.name, p.version, p.from_stage, p.to_stage, p.reason) == (
        "model",
        2,
        None,
        "poc",
        "first try",
    )
    assert p.by == store.key_id and p.gates == ()  # the promoter's key signed it
    q = store.promote("model@2", to="prototype")
    assert q.from_stage == "poc"
    v = store.artifact("model@2")
    assert v.stage == "prototype"  # the highest stage it holds (it still holds poc)
    assert store.stage("model", "poc") == v and store.stage("model", "prototype") == v
    assert store.artifact("model@prototype").version == 2
    with pytest.raises(mk.RegistryError, match="unknown stage 'production'"):
        store.promote("model@2", to="production")


def test_a_stage_moves_and_history_keeps_both(store: mk.Store) -> None:
    _three(store)
    store.promote("model@1", to="poc")
    store.promote("model@3", to="poc")  # moves poc; version 1 has held it
    assert store.stage("model", "poc").version == 3  # type: ignore[union-attr]
    assert store.artifact("model@1").stage is None
    store.promote("model@1", to="prototype")  # it *has held* poc
    store.promote("model@3", to="prototype")
    store.promote("model@1", to="prototype", reason="rollback")  # an older version back
    hist = store.history("model")
    assert [(p.version, p.to_stage) for p in hist] == [
        (1, "poc"),
        (3, "poc"),
        (1, "prototype"),
        (3, "prototype"),
        (1, "prototype"),
    ]
    assert hist[-1].reason == "rollback" and hist[-1].from_stage is None
    assert store.stage("model", "prototype").version == 1  # type: ignore[union-attr]
    assert store.stage("model", "mvp") is None
    # promoting to a stage held already changes nothing
    again = store.promote("model@1", to="prototype")
    assert again == hist[-1] and len(store.history("model")) == 5


def test_gates_decide_and_a_failure_changes_nothing(store: mk.Store) -> None:
    store.publish("gated", 1, metadata={"accuracy": 0.95})
    store.publish("gated", 2, metadata={"accuracy": 0.5})
    store.promote("gated@1", to="poc")
    store.promote("gated@2", to="poc")

    @mk.gate("gated", to="prototype")
    def accurate_enough(v: mk.ArtifactVersion) -> bool:
        return bool(v.metadata["accuracy"] >= 0.9)

    def explodes(v: mk.ArtifactVersion) -> bool:
        raise ValueError("no data")

    p = store.promote("gated@1", to="prototype", reason="beats baseline")
    assert [(g.name, g.passed) for g in p.gates] == [("accurate_enough", True)]
    before = store.history("gated")
    with pytest.raises(mk.GateFailed) as info:
        store.promote("gated@2", to="prototype", gates=[explodes, lambda v: True])
    err = info.value
    assert isinstance(err, mk.RegistryError)
    assert [(r.name, r.passed) for r in err.results] == [
        ("accurate_enough", False),
        ("explodes", False),
        ("<lambda>", True),
    ]
    assert "raised ValueError: no data" in str(err) and "nothing changed" in str(err)
    assert store.history("gated") == before
    assert store.stage("gated", "prototype").version == 1  # type: ignore[union-attr]


def test_a_gate_must_return_a_bool(store: mk.Store) -> None:
    store.publish("g2", 1)
    with pytest.raises(mk.GateFailed, match="expected a bool"):
        store.promote("g2@1", to="poc", gates=[lambda v: "yes"])
    with pytest.raises(mk.RegistryError, match="not callable"):
        store.promote("g2@1", to="poc", gates=[3])


def test_mvp_requires_the_reproducible_gate(store: mk.Store) -> None:
    store.publish("outside", 1)
    store.promote("outside@1", to="poc")
    store.promote("outside@1", to="prototype")
    with pytest.raises(mk.GateFailed) as info:
        store.promote("outside@1", to="mvp")
    (result,) = info.value.results
    assert result.name == "reproducible" and not result.passed
    assert "published outside a run" in result.message
    assert store.stage("outside", "mvp") is None
