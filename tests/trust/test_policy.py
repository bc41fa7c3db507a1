"""Roles nest, whatever the grants; a policy chain counts only as far as admins signed it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mlflowkit.trust.policy import ROLES, Grant, Policy, resolve

KEYS = ["k1", "k2", "k3"]
NAMESPACES = ["*", "vision", "audio"]
STAGES = [None, "poc", "mvp"]
WEAKER = {
    "admin": ROLES,
    "publisher": ("publisher", "writer", "reader"),
    "promoter": ("promoter", "writer", "reader"),
    "writer": ("writer", "reader"),
    "reader": ("reader",),
}

grants = st.lists(
    st.builds(
        Grant,
        st.sampled_from(ROLES),
        st.sampled_from(KEYS),
        st.sampled_from(NAMESPACES),
        st.sampled_from(STAGES),
    ),
    max_size=6,
)


@given(grants, st.sampled_from(KEYS), st.sampled_from(NAMESPACES[1:]))
def test_a_role_holds_every_weaker_role(gs: list[Grant], key: str, ns: str) -> None:
    p = Policy(tuple(gs), 1)
    for role in ROLES:
        if p.holds(key, role, ns, stage="mvp"):
            for weaker in WEAKER[role]:
                assert p.holds(key, weaker, ns, stage="mvp"), (role, weaker)
            assert p.holds(key, role)  # held in some namespace
    assert not p.holds(None, "reader")


@given(st.lists(st.sampled_from(["owner", "other"]), min_size=1, max_size=5))
def test_only_versions_signed_by_an_admin_count(signers: list[str]) -> None:
    import blake3
    import orjson

    versions = []
    prev = None
    for n, who in enumerate(signers, start=1):
        raw = orjson.dumps({"version": n, "prev": prev, "grants": []})
        digest = blake3.blake3(raw).digest()
        versions.append((n, orjson.loads(raw), who, digest))
        prev = digest.hex()
    policy, problems = resolve(versions, "owner")
    # version 1 takes the owner's admin grant away, so only a chain of one can count
    expected = 1 if signers[0] == "owner" else 0
    assert policy.version == expected
    assert len(problems) == len(signers) - expected
