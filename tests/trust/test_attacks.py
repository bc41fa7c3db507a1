"""Attacks by someone who can write the store's files but holds no key allowed to write there.

Every test uses a real store folder and real keys (in the session's temporary keys folder).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

import mlflowkit as mk
from mlflowkit.records import CacheEntry
from mlflowkit.store.formats import (
    decode_entry,
    decode_pack,
    encode_entry,
    encode_pack,
    seal_document,
    unseal_document,
)
from mlflowkit.trust.policy import Grant, Policy
from mlflowkit.trust.signing import document_message, sign
from tests.holders import entry_bytes
from tests.trust.helpers import (
    evil_payload,
    object_path,
    pair,
    signer,
    use_key,
    write_object,
    write_value,
)


def test_a_pickle_written_over_an_npy_object_never_runs(tmp_path: Path) -> None:
    store = mk.Store(tmp_path / "store")
    first = pair.plan(n=100).run(store=store, progress=False)
    x = first.step("produce").output_digest
    assert x is not None and store.info(x).serializer == "npy"
    sentinel = tmp_path / "owned"
    # the attack of the issue: a pickle under the npy object's name, its header recomputed
    write_object(store, x, "pickle", evil_payload(sentinel))
    again = pair.plan(n=100).run(store=store, progress=False)  # fully cached
    assert all(s.status == "cached" for s in again.steps if not s.internal)
    with pytest.raises(mk.UntrustedObjectError) as info:
        again.output  # noqa: B018
    assert isinstance(info.value, mk.StoreError)
    assert x in str(info.value) and "not signed" in str(info.value)
    with pytest.raises(mk.UntrustedObjectError):
        mk.Store(store.url).get(x)  # a fresh reader too
    # the attacker signs it with a key of their own: refused all the same, and named
    mallory = signer("mallory")
    write_object(store, x, "pickle", evil_payload(sentinel), mallory)
    with pytest.raises(mk.UntrustedObjectError) as info:
        mk.Store(store.url).get(x)
    assert info.value.signer == mallory.key_id and mallory.key_id in str(info.value)
    found = store.verify()
    assert any(line.startswith(f"untrusted object {x}:") for line in found)
    assert not sentinel.exists()
    # verify set it aside: the next run recomputes the array
    healed = pair.plan(n=100).run(store=store, progress=False)
    np.testing.assert_array_equal(healed.output[0], np.arange(100) * 0.5)
    assert store.verify() == [] and not sentinel.exists()


def test_a_pickle_signed_by_the_owner_loads(tmp_path: Path) -> None:
    store = mk.Store(tmp_path / "store")
    digest = store.put({1, 2, 3})  # only pickle can hold a set
    assert store.info(digest).serializer == "pickle"
    assert mk.Store(store.url).get(digest) == {1, 2, 3}
    assert store.verify() == []


def test_a_forged_cache_entry_is_a_miss_and_reported(tmp_path: Path) -> None:
    store = mk.Store(tmp_path / "store")
    first = pair.plan(n=100).run(store=store, progress=False)
    key = first.step("consume").key
    assert key is not None
    wrong = write_value(store, 12345.0)
    path = Path(store.root, "cache", key[:2], f"{key}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = decode_entry(entry_bytes(store, key))  # a run's entries are in a segment file
    store.close()
    assert entry is not None
    entry.output_digest = wrong
    path.write_bytes(encode_entry(entry))  # checksum recomputed, no signature
    store.drop_packs()  # (a pack would be used first: see the next test)
    assert any(line.startswith(f"untrusted cache entry {key}:") for line in store.verify())
    again = pair.plan(n=100).run(store=store, progress=False)
    assert again.output[1] == float((np.arange(100) * 0.5).sum())
    # the forged file counts for nothing, and hides nothing: the run's own signed entry (in
    # a segment file) is used
    assert again.step("consume").status == "cached"
    # signed by a key that may not write: it counts for nothing all the same
    mallory = signer("mallory")
    entry.output_digest = wrong
    path.write_bytes(encode_entry(entry, lambda d: sign(mallory, document_message("cache", d))))
    store.drop_packs()
    found = mk.Store(store.url).get_cache(key)
    assert found is not None and found.output_digest != wrong
    assert any(line.startswith(f"untrusted cache entry {key}:") for line in store.verify())
    assert pair.plan(n=100).run(store=store, progress=False).output[1] != 12345.0


def test_a_forged_pack_is_ignored_and_reported(tmp_path: Path) -> None:
    store = mk.Store(tmp_path / "store")
    pair.plan(n=100).run(store=store, progress=False)
    pair.plan(n=100).run(store=store, progress=False)
    packs = list(Path(store.root, "packs").glob("*.json"))
    assert packs
    wrong = write_value(store, 777.0)
    for pack in packs:
        entries = decode_pack(pack.read_bytes())
        assert entries is not None
        forged = [
            CacheEntry(k, wrong if isinstance(e.meta, dict) and k else e.output_digest)
            for k, e in entries.items()
        ]
        pack.write_bytes(encode_pack(forged))
    assert any(line.startswith("untrusted cache pack") for line in store.verify())
    run = pair.plan(n=100).run(store=store, progress=False)
    assert run.output[1] == float((np.arange(100) * 0.5).sum())


def _policy_file(store: mk.Store, version: int) -> Path:
    return Path(store.root, "policy", f"{version:08d}.json")


def test_a_policy_written_by_a_non_admin_is_ignored_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = use_key(monkeypatch, "alice")
    store = mk.Store(tmp_path / "store")
    bob = signer("bob")
    store.grant("writer", bob.key_id)
    # bob may not change the policy through the API ...
    with pytest.raises(mk.AccessDenied) as info:
        mk.Store(store.url, key="bob").grant("admin", bob.key_id)
    assert (info.value.role, info.value.namespace, info.value.key_id) == ("admin", "*", bob.key_id)
    assert bob.key_id in str(info.value) and "admin" in str(info.value)
    # ... so he writes version 2 straight into the files, signed with his key
    _, raw = store.policy.changed((Grant("admin", bob.key_id),), bob.key_id)
    _policy_file(store, 2).write_bytes(
        seal_document(raw, lambda d: sign(bob, document_message("policy", d)))
    )
    fresh = mk.Store(store.url)
    assert fresh.policy.version == 1
    assert fresh.policy.holds(alice, "admin") and not fresh.policy.holds(bob.key_id, "admin")
    assert any("policy version 2" in line and "not admin" in line for line in fresh.verify())


def test_a_replayed_old_policy_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_key(monkeypatch, "alice")
    store = mk.Store(tmp_path / "store")
    bob = signer("bob")
    store.grant("writer", bob.key_id)  # version 1
    store.revoke("writer", bob.key_id)  # version 2
    assert store.policy.version == 2 and not store.policy.holds(bob.key_id, "writer")
    # replaying version 1 (validly signed by alice) as the newest one
    shutil.copy(_policy_file(store, 1), _policy_file(store, 3))
    assert mk.Store(store.url).policy.version == 2
    assert any("policy version 3" in line for line in store.verify())
    _policy_file(store, 3).unlink()
    # removing version 2 brings version 1 back: the audit trail remembers version 2
    _policy_file(store, 2).unlink()
    found = mk.Store(store.url).verify()
    assert any("rollback" in line for line in found)


def test_a_removed_or_edited_audit_entry_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = use_key(monkeypatch, "alice")
    store = mk.Store(tmp_path / "store")
    bob = signer("bob")
    store.grant("reader", bob.key_id)
    store.grant("writer", bob.key_id)
    store.put([1, 2, 3])
    store.gc(keep_last=0)
    entries = store.audit()
    assert [e.action for e in entries] == ["policy", "policy", "gc"]
    assert all(isinstance(e, mk.AuditEntry) and e.by == alice for e in entries)
    assert store.verify() == []
    folder = Path(store.root, "audit")
    files = sorted(folder.glob("*.json"))
    # edited: the checksum recomputed, the signature kept
    value, block, _ = unseal_document(files[1].read_bytes())
    value["detail"]["grants"] = 99
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    original = files[1].read_bytes()
    files[1].write_bytes(seal_document(raw, lambda d: block or b""))
    assert any("audit entry 2" in line for line in store.verify())
    files[1].write_bytes(original)
    assert store.verify() == []
    # removed
    files[1].unlink()
    found = store.verify()
    assert any("audit entries 2..2 are missing" in line for line in found)


def test_a_revoked_key_s_writes_are_no_longer_trusted_its_history_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_key(monkeypatch, "alice")
    store = mk.Store(tmp_path / "store")
    bob = signer("bob")
    store.grant("writer", bob.key_id)
    as_bob = mk.Store(store.url, key="bob")
    as_bob.put([0])
    as_bob.gc(keep_last=0)  # an audited action of bob's
    digest = as_bob.put({2, 4})
    first = pair.plan(n=50).run(store=as_bob, progress=False)
    assert [e.action for e in store.audit()] == ["policy", "gc"]
    mine = store.put({3, 6})
    assert mk.Store(store.url).get(digest) == {2, 4}  # trusted while bob is a writer
    store.revoke("writer", bob.key_id)
    reader = mk.Store(store.url)
    with pytest.raises(mk.UntrustedObjectError) as info:
        reader.get(digest)
    assert info.value.signer == bob.key_id
    assert reader.get(mine) == {3, 6}  # alice's own objects stay valid
    key = first.step("consume").key
    assert key is not None and reader.get_cache(key) is None  # bob's cache entries: misses
    with pytest.raises(mk.AccessDenied):
        mk.Store(store.url, key="bob").put([4, 5])
    found = reader.verify()
    assert any(line.startswith(f"untrusted object {digest}") for line in found)
    assert any(line.startswith(f"untrusted cache entry {key}") for line in found)
    assert not any(line.startswith("audit") for line in found)  # bob's gc entry still counts
    again = pair.plan(n=50).run(store=store, progress=False)
    assert again.step("consume").status == "executed"  # recomputed, now signed by alice
    assert mk.Store(store.url).get_cache(key) is not None


def test_a_key_without_a_role_cannot_write(tmp_path: Path) -> None:
    store = mk.Store(tmp_path / "store")
    store.create()
    intruder = mk.Store(store.url, key=str(tmp_path / "nokey.key"))
    with pytest.raises(mk.MlflowkitError):  # that key file does not exist
        intruder.put([1])
    signer("carol")
    carol = mk.Store(store.url, key="carol")
    with pytest.raises(mk.AccessDenied) as info:
        pair.plan(n=10).run(store=carol, progress=False)
    assert info.value.key_id == carol.key_id and info.value.role == "writer"
    store.grant("writer", carol.key_id, namespace="vision")
    pair.plan(n=10).run(store=mk.Store(store.url, key="carol"), progress=False)


def test_the_marker_cannot_hand_the_store_to_someone_else(tmp_path: Path) -> None:
    store = mk.Store(tmp_path / "store")
    digest = store.put({1})
    assert mk.Store(store.url).get(digest) == {1}  # pins the owner for this user
    marker = Path(store.root, "mlflowkit-store.json")
    doc = orjson.loads(marker.read_bytes())
    mallory = signer("mallory")
    block = sign(mallory, document_message("owner", __import__("blake3").blake3(
        mallory.key_id.encode()).digest()))  # fmt: skip
    doc.update(owner=mallory.key_id, owner_sig=block.hex())
    marker.write_bytes(orjson.dumps(doc))
    with pytest.raises(mk.UntrustedObjectError) as info:
        mk.Store(store.url).get(digest)
    assert "first saw it owned by" in str(info.value)
    doc.update(owner_sig="00" * 96)  # a claim without the claimed key's signature
    marker.write_bytes(orjson.dumps(doc))
    with pytest.raises(mk.UntrustedObjectError):
        mk.Store(store.url).get(digest)


def test_unsigned_pickles_of_an_earlier_version_need_adopting(tmp_path: Path) -> None:
    store = mk.Store(tmp_path / "store")
    store.put([0])
    digest = mk.hash_value(frozenset({1, 2}))
    import pickle

    write_object(store, digest, "pickle", pickle.dumps(frozenset({1, 2})))
    marker = Path(store.root, "mlflowkit-store.json")
    marker.write_bytes(orjson.dumps({"mlflowkit": "store", "format": 1}))  # no owner: older
    old = mk.Store(store.url)
    assert old.owner is None
    with pytest.raises(mk.UntrustedObjectError):
        old.get(digest)
    assert old.adopt() == [digest]
    assert mk.Store(store.url).get(digest) == frozenset({1, 2})
    assert mk.Store(store.url).owner == old.key_id
    assert [e.action for e in old.audit()] == ["adopt"]


def test_policy_roles_nest() -> None:
    p = Policy(
        (
            Grant("admin", "a"),
            Grant("publisher", "p", "vision"),
            Grant("promoter", "r", stage="mvp"),
            Grant("reader", "x"),
        ),
        1,
    )
    assert all(p.holds("a", role, "any/ns") for role in ("reader", "writer", "promoter"))
    assert p.holds("p", "writer", "vision") and not p.holds("p", "writer", "audio")
    assert p.holds("p", "writer") and not p.holds("p", "promoter", "vision")
    assert p.holds("r", "promoter", "x", stage="mvp") and not p.holds("r", "promoter", stage="poc")
    assert p.holds("r", "writer") and p.holds("x", "reader") and not p.holds("x", "writer")
    assert object_path is not None


def test_the_last_admin_cannot_be_revoked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = use_key(monkeypatch, "alice")
    store = mk.Store(tmp_path / "store")
    store.grant("writer", signer("bob").key_id)
    with pytest.raises(mk.StoreError, match="without an admin"):
        store.revoke("admin", alice)
    store.grant("admin", signer("bob").key_id)
    assert not store.revoke("admin", alice).holds(alice, "admin")


def test_a_forged_run_record_is_reported(tmp_path: Path) -> None:
    store = mk.Store(tmp_path / "store")
    run = pair.plan(n=20).run(store=store, progress=False)
    path = Path(store.root, "runs", f"{run.id}.json")
    data = path.read_bytes()
    assert b'"signature":"' in data and store.verify() == []
    assert mk.Store(store.url).run(run.id).id == run.id  # readers still parse it
    path.write_bytes(data.replace(b'"succeeded"', b'"failed"'))
    assert any(line.startswith(f"untrusted run record {run.id}") for line in store.verify())
