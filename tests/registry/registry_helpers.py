"""Work for the registry's multi-process tests (importable by spawned children)."""

from __future__ import annotations

import sys


def publish_many(url: str, worker: int, count: int) -> list[int]:
    """Publish ``count`` distinct values to one name; return the version numbers received."""
    from mlflowkit.store import Store

    got = []
    with Store(url) as store:
        for i in range(count):
            got.append(store.publish("shared/model", {"worker": worker, "i": i}).version)
    return got


def promote_many(url: str, version: int, count: int) -> int:
    """Promote one version to poc and back to it ``count`` times, alternating with rivals."""
    from mlflowkit.store import Store

    with Store(url) as store:
        for i in range(count):
            store.promote(f"race@{version}", to="poc", reason=f"{version}-{i}")
    return count


def publish_forever(url: str) -> None:
    """Publish new versions, and promote them, until killed (prints READY once started)."""
    from mlflowkit.store import Store

    store = Store(url)
    i = 0
    while True:
        v = store.publish("crash", {"i": i, "pad": "x" * 1000})
        store.promote(v.spec, to="poc", reason=f"round {i}")
        if i == 0:
            print("READY", flush=True)
        i += 1


if __name__ == "__main__":
    publish_forever(sys.argv[1])
