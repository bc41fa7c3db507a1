"""The artifact registry under governance: who may publish and promote, and forged records.

A team: Ada (owner, admin), Dan (publisher in ``vision``), Rita (promoter in ``vision``, every
stage), Pat (promoter in ``vision`` for ``prototype`` only) and Mallory, who can write the
store's files (journal files, the SQLite index) but holds no role.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import mlflowkit as mk
from mlflowkit.store.formats import seal_document, unseal_document
from mlflowkit.trust import keys
from mlflowkit.trust.signing import document_message, sign
from tests.trust.helpers import signer

NAME = "vision/model"


@mk.step
def fit(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


@mk.pipeline
def train(n: int = 5) -> Any:
    return mk.publish(NAME, fit(n))


@mk.step
def score(x: np.ndarray) -> float:
    return float(x.sum())


@mk.pipeline
def evaluate(url: str) -> Any:
    return score(mk.artifact(f"{NAME}@mvp", store=url))


@pytest.fixture
def team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The team's store with two versions of ``vision/model``, version 1 at ``mvp``."""
    monkeypatch.chdir(tmp_path)  # outside any git tree: the mvp gate does not see the checkout
    people = {n: signer(n) for n in ("ada", "dan", "rita", "pat", "mallory")}
    url = str(tmp_path / "store")
    ada = mk.Store(url, key="ada")
    ada.grant("publisher", people["dan"].key_id, namespace="vision")
    ada.grant("promoter", people["rita"].key_id, namespace="vision")
    ada.grant("promoter", people["pat"].key_id, namespace="vision", stage="prototype")
    dan, rita = mk.Store(url, key="dan"), mk.Store(url, key="rita")
    train.plan(n=5).run(store=dan, progress=False)
    train.plan(n=6).run(store=dan, progress=False)
    for stage in mk.STAGES:
        rita.promote(f"{NAME}@1", to=stage, reason="reviewed")
    return {"url": url, "keys": people, "ada": ada, "dan": dan, "rita": rita}


def _forged(kind: str, record: dict[str, Any], by: keys.Signer) -> bytes:
    """A record sealed and signed by ``by`` (what someone with a key of their own can make)."""
    raw = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return seal_document(raw, lambda digest: sign(by, document_message(kind, digest)))


def _promotion_of_v2(team: dict[str, Any], seq: int, by: keys.Signer) -> dict[str, Any]:
    v2 = team["ada"].artifact(f"{NAME}@2")
    return {
        "seq": seq,
        "name": NAME,
        "version": 2,
        "digest": v2.digest,
        "from_stage": None,
        "to_stage": "mvp",
        "at": "2026-12-04T12:00:00+00:00",
        "by": by.key_id,
        "reason": "trust me",
        "gates": "[]",
        "policy": team["ada"].policy.version,
    }


def _index(url: str) -> sqlite3.Connection:
    return sqlite3.connect(os.path.join(url, "index.sqlite"), isolation_level=None)


def _mvp_is_v1(url: str) -> None:
    """Every way of reading ``@mvp`` still gives version 1, in a fresh process's store."""
    store = mk.Store(url, key="ada")
    assert store.artifact(f"{NAME}@mvp").version == 1
    held = store.stage(NAME, "mvp")
    assert held is not None and held.version == 1
    assert [(v.version, v.stage) for v in store.versions(NAME)] == [(1, "mvp"), (2, None)]
    assert [p.version for p in store.history(NAME)] == [1, 1, 1]
    run = evaluate.plan(url=url).run(store=store, progress=False)
    assert run.output == pytest.approx(float(np.linspace(0.0, 1.0, 5).sum()))


def test_signed_records_name_their_keys_and_are_audited(team: dict[str, Any]) -> None:
    people, ada = team["keys"], team["ada"]
    v1, v2 = ada.versions(NAME)
    assert v1.created_by == v2.created_by == people["dan"].key_id
    assert {p.by for p in ada.history(NAME)} == {people["rita"].key_id}
    actions = [(e.action, e.by, e.target) for e in ada.audit() if e.action != "policy"]
    assert actions == [
        ("publish", people["dan"].key_id, f"{NAME}@1"),
        ("publish", people["dan"].key_id, f"{NAME}@2"),
        *[("promote", people["rita"].key_id, f"{NAME}@1")] * 3,
    ]
    assert ada.verify() == []


def test_a_forged_promotion_file_does_not_move_mvp(team: dict[str, Any]) -> None:
    url, mallory = team["url"], team["keys"]["mallory"]
    folder = Path(url, "registry", "promotions", "vision~model")
    (folder / "99.json").write_bytes(
        _forged("promotion", _promotion_of_v2(team, 99, mallory), mallory)
    )
    # the same forgery, claiming to be Rita's: the signature is still Mallory's
    as_rita = dict(_promotion_of_v2(team, 98, mallory), by=team["keys"]["rita"].key_id)
    (folder / "98.json").write_bytes(_forged("promotion", as_rita, mallory))
    _mvp_is_v1(url)
    found = team["ada"].verify()
    assert any(
        "registry/promotions/vision~model/99.json" in f and mallory.key_id in f for f in found
    )
    assert any("98.json" in f and "but is signed by" in f for f in found)
    # a lost index is filled back from the journal: the forged files stay out of it
    for suffix in ("", "-wal", "-shm"):
        Path(url, f"index.sqlite{suffix}").unlink(missing_ok=True)
    _mvp_is_v1(url)
    assert any("99.json" in f for f in mk.Store(url, key="ada").verify())


def test_forged_index_rows_do_not_move_mvp(team: dict[str, Any]) -> None:
    url, mallory, rita = team["url"], team["keys"]["mallory"], team["keys"]["rita"]
    legit = sorted(Path(url, "registry", "promotions", "vision~model").iterdir())[-1]
    with _index(url) as conn:
        conn.execute("UPDATE registry_stages SET version=2 WHERE stage='mvp'")
        row = "INSERT INTO registry_promotions (seq, name, version, from_stage, to_stage, at, by, reason, gates, record) VALUES (?,?,2,NULL,'mvp','2026','x','','[]',?)"  # noqa: E501
        forged = _forged("promotion", _promotion_of_v2(team, 50, mallory), mallory)
        conn.execute(row, (50, NAME, forged))
        conn.execute(row, (51, NAME, None))  # unsigned
        conn.execute(row, (52, NAME, legit.read_bytes()))  # Rita's real record, replayed
        # an edited column of Rita's real promotion: readers build it from its record
        conn.execute("UPDATE registry_promotions SET version=2, by='x' WHERE seq=3")
    _mvp_is_v1(url)
    assert all(p.by == rita.key_id for p in mk.Store(url).history(NAME))
    found = "\n".join(team["ada"].verify())
    assert "untrusted promotion 50 of vision/model@2" in found and mallory.key_id in found
    assert "untrusted promotion 51" in found and "not signed" in found
    assert "untrusted promotion 52" in found and "do not match its record" in found
    assert "untrusted promotion 3 " in found
    assert "registry stage vision/model@mvp points at version 2" in found


def test_a_forged_version_is_ignored(team: dict[str, Any]) -> None:
    url, mallory, dan = team["url"], team["keys"]["mallory"], team["keys"]["dan"]
    digest = team["ada"].put(np.zeros(3))
    record = {
        "name": NAME,
        "version": 3,
        "digest": digest,
        "run_id": None,
        "created_at": "2026-12-04T12:00:00+00:00",
        "created_by": mallory.key_id,
        "metadata": "{}",
        "policy": team["ada"].policy.version,
    }
    data = _forged("version", record, mallory)
    Path(url, "registry", "versions", "vision~model", "3.json").write_bytes(data)
    with _index(url) as conn:
        conn.execute(
            "INSERT INTO registry_versions VALUES (?,3,?,NULL,'2026',?,'{}',?)",
            (NAME, digest, mallory.key_id, data),
        )
    store = mk.Store(url, key="ada")
    assert [v.version for v in store.versions(NAME)] == [1, 2]
    assert store.artifact(NAME).version == 2
    with pytest.raises(mk.RegistryError):
        store.artifact(f"{NAME}@3")
    found = "\n".join(store.verify())
    assert "untrusted artifact version vision/model@3 (index row)" in found
    assert "registry/versions/vision~model/3.json" in found and mallory.key_id in found
    # the next real version takes the next number; its file replaces the forged one
    v = team["dan"].publish(NAME, np.ones(2))
    assert (v.version, v.created_by) == (4, dan.key_id)
    for suffix in ("", "-wal", "-shm"):
        Path(url, f"index.sqlite{suffix}").unlink(missing_ok=True)
    assert [v.version for v in mk.Store(url).versions(NAME)] == [1, 2, 4]


def test_a_promoter_for_prototype_may_not_promote_to_mvp(team: dict[str, Any]) -> None:
    url, pat = team["url"], team["keys"]["pat"]
    store = mk.Store(url, key="pat")
    with pytest.raises(mk.AccessDenied):
        store.promote(f"{NAME}@2", to="poc")  # a grant with a stage covers that stage only
    team["rita"].promote(f"{NAME}@2", to="poc")
    p = store.promote(f"{NAME}@2", to="prototype")
    assert p.by == pat.key_id
    with pytest.raises(mk.AccessDenied) as info:
        store.promote(f"{NAME}@2", to="mvp")
    assert (info.value.role, info.value.namespace, info.value.key_id) == (
        "promoter",
        "vision",
        pat.key_id,
    )
    assert "'mvp'" in str(info.value)
    # Pat writes the promotion by hand, signed with his key: readers ignore it
    folder = Path(url, "registry", "promotions", "vision~model")
    (folder / "77.json").write_bytes(_forged("promotion", _promotion_of_v2(team, 77, pat), pat))
    for suffix in ("", "-wal", "-shm"):
        Path(url, f"index.sqlite{suffix}").unlink(missing_ok=True)
    _mvp_stage = mk.Store(url).stage(NAME, "mvp")
    assert _mvp_stage is not None and _mvp_stage.version == 1
    assert mk.Store(url).artifact(f"{NAME}@prototype").version == 2
    found = "\n".join(mk.Store(url, key="ada").verify())
    assert "77.json" in found and "did not hold promoter for stage 'mvp'" in found


def test_publishing_needs_the_publisher_role(team: dict[str, Any]) -> None:
    url, people = team["url"], team["keys"]
    objects = sorted(p.name for p in Path(url, "objects").rglob("*") if p.is_file())
    rita = team["rita"]
    with pytest.raises(mk.AccessDenied) as info:
        rita.publish(NAME, np.arange(7))
    assert (info.value.role, info.value.namespace, info.value.key_id) == (
        "publisher",
        "vision",
        people["rita"].key_id,
    )
    dan = team["dan"]
    with pytest.raises(mk.AccessDenied) as info:
        dan.publish("audio/model", np.arange(7))  # another namespace
    assert info.value.namespace == "audio"
    with pytest.raises(mk.AccessDenied) as info:
        dan.publish("model", np.arange(7))  # the default namespace: only grants for all
    assert info.value.namespace == "" and "the default namespace" in str(info.value)
    # nothing was written, not even the value
    assert sorted(p.name for p in Path(url, "objects").rglob("*") if p.is_file()) == objects
    runs = len(rita.runs())
    with pytest.raises(mk.AccessDenied):
        train.plan(n=9).run(store=rita, progress=False)  # mk.publish: refused before running
    assert [v.version for v in mk.Store(url).versions(NAME)] == [1, 2]
    assert len(rita.runs()) == runs
    assert sorted(p.name for p in Path(url, "objects").rglob("*") if p.is_file()) == objects


def test_unsigned_records_count_until_the_store_has_an_owner(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    with mk.Store(url) as store:
        store.publish("model", np.arange(3))
        store.promote("model@1", to="poc")
    # the index rows and journal files of an earlier version: plain, unsigned
    with _index(url) as conn:
        conn.execute("UPDATE registry_versions SET record=NULL, created_by=NULL")
        conn.execute("UPDATE registry_promotions SET record=NULL, by=NULL")
    for path in Path(url, "registry").rglob("*.json"):
        value, _, _ = unseal_document(path.read_bytes())
        path.write_bytes(
            orjson.dumps({k: v for k, v in value.items() if k not in ("policy", "seq")})
        )
    marker = Path(url, "mlflowkit-store.json")
    doc = orjson.loads(marker.read_bytes())
    marker.write_bytes(orjson.dumps({k: v for k, v in doc.items() if not k.startswith("owner")}))
    old = mk.Store(url)
    assert old.owner is None
    assert old.artifact("model@poc").created_by is None
    assert old.verify() == []
    adopted = mk.Store(url)
    adopted.adopt()  # signs the unsigned records with the adopting key
    assert adopted.artifact("model@poc").created_by == adopted.key_id
    assert adopted.history("model")[0].by == adopted.key_id
    assert adopted.verify() == []
    for suffix in ("", "-wal", "-shm"):
        Path(url, f"index.sqlite{suffix}").unlink(missing_ok=True)
    assert mk.Store(url).artifact("model@poc").version == 1


def test_a_cached_run_that_publishes_equal_content_signs_nothing(team: dict[str, Any]) -> None:
    url = team["url"]
    audited = len(team["ada"].audit())
    files = sorted(Path(url, "registry").rglob("*.json"))
    run = train.plan(n=6).run(store=mk.Store(url, key="dan"), progress=False)
    assert run.published[NAME].version == 2
    assert len(team["ada"].audit()) == audited
    assert sorted(Path(url, "registry").rglob("*.json")) == files
