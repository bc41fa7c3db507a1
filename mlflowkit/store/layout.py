"""Where a store keeps what: the names of its files and folders, and laying a local one out.

Layer 5 (part of the store's implementation). Layout under the store URL::

    objects/ab/<digest>      object: header + payload (``formats``)
    cache/ab/<key>.json      cache entry: {"checksum": "<blake3 of entry>", "entry": {...}}
    segments/ab/<name>.seg   small objects and cache entries of a run, group-committed in
                             one file (``segments``; made when first written)
    runs/<run_id>.json       run record (RunRecord.to_stored() as JSON)
    runs/<run_id>.started    the record written when the run started (removed when it ends)
    packs/<name>.json        cache pack: the cache entries one pipeline's last run used
    locks/flight             single-flight locks of a local store: a kernel record lock on one
                             byte per key (``mlflowkit.store.flight``); empty, never deleted
    locks/<key>.lock         single-flight lock file of a remote store (or a local one on
                             Windows): pid, host, token, lease expiry (``mlflowkit.store.locks``)
    quarantine/<digest>.<t>  objects that failed their integrity check, set aside
    registry/                named artifact versions and promotions, one JSON file each
                             (``mlflowkit.registry.journal``; the index numbers them)
    tmp/                     temp files of in-flight local writes (swept when old)
    index.sqlite             the SQLite index (local stores; remote ones keep it in a cache
                             folder: ``mlflowkit.store.sqlite_index``)
    mlflowkit-store.json     the marker: this folder is a store, and its owner's key id, signed
    policy/<n>.json          policy version n (signed by an admin)
    audit/<n>.json           audit entry n (signed, hash-chained)

Invariants:

* Every name the store makes matches ``NAME`` (objects, cache keys, packs, run ids), and a
  store deletes only names of its own shapes (see ``mlflowkit.store.core``).
* ``prepare_layout`` makes the folders and the marker of a local store once per process and
  folder: a folder deleted and made again since (its ``tmp/`` is another inode) is laid out
  again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from mlflowkit.errors import StoreError
from mlflowkit.store.objects import ObjectStore

__all__ = [
    "AREAS",
    "DEFAULT_LOCK_TIMEOUT_S",
    "DEFAULT_URL",
    "LEGACY_AREAS",
    "LOCK_NAME",
    "MARKER",
    "NAME",
    "PREPARED",
    "QUARANTINED",
    "STARTED",
    "STORE_FORMAT",
    "TMP_MAX_AGE_S",
    "check_format",
    "check_name",
    "is_temp",
    "no_store",
    "prepare_layout",
]

DEFAULT_URL = ".mlflowkit"
#: the store format this mlflowkit writes and reads (the marker's ``"format"``); raise it with
#: any change older versions could not read. 2: segment files (a run's small values and cache
#: entries, group-committed), which format-1 readers would not see
STORE_FORMAT = 2
STARTED = ".started"  # the record of a run in progress (see ``put_run``)
TMP_MAX_AGE_S = 30 * 60.0  # a temp file older than this belongs to a writer that died
DEFAULT_LOCK_TIMEOUT_S = 300.0

#: a digest, cache key, pack name or run id
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{1,199}")
LOCK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,119}")
QUARANTINED = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{1,199}\.\d{1,20}")
MARKER = "mlflowkit-store.json"

#: local store folders laid out by this process: root -> inode of its tmp/ folder
PREPARED: dict[str, int] = {}
AREAS = ("objects", "cache", "packs", "runs", "locks", "quarantine", "tmp")
#: what every earlier version laid out when it opened a store (a store made before the marker)
LEGACY_AREAS = ("objects", "cache", "runs")


def prepare_layout(root: str, files: ObjectStore, marker_bytes: Callable[[], bytes]) -> bool:
    """Create a local store's folders and marker unless this process did so already.

    One ``stat`` tells a folder laid out here before from one that is new or was deleted and
    made again since (its ``tmp/`` is another inode then). True when it was laid out now.
    """
    try:
        ino = os.stat(os.path.join(root, "tmp")).st_ino
    except FileNotFoundError:
        ino = None
    if ino is not None and PREPARED.get(root) == ino:
        return False
    for area in AREAS:
        path = os.path.join(root, area)
        if not os.path.isdir(path):  # a stat: a quarter of what makedirs costs when it exists
            os.makedirs(path, exist_ok=True)
    marker = os.path.join(root, MARKER)
    if not os.path.exists(marker):
        files.write_atomic(marker, (marker_bytes(),), False)
    PREPARED[root] = os.stat(os.path.join(root, "tmp")).st_ino
    return True


def no_store(url: str) -> StoreError:
    """The error for reading a path that holds no store."""
    return StoreError(
        f"no mlflowkit store at {url}; create one by running a pipeline with --store {url} "
        f"(or plan.run(store=...)), or give the path of an existing store. Expected a folder "
        f"holding {MARKER} (or the objects/, cache/ and runs/ folders of a store made by an "
        "earlier version); nothing was created.",
        url=url,
    )


def is_temp(name: str) -> bool:
    """Whether a listed name is a temp file or a broken-lock leftover, not a store file."""
    return name.endswith(".tmp") or ".broken-" in name


def check_name(name: str, what: str, url: str) -> str:
    """``name`` when it is a valid digest, key, pack name or run id; else ``StoreError``."""
    if not isinstance(name, str) or NAME.fullmatch(name) is None:
        raise StoreError(
            f"invalid {what} {name!r}: expected 2 to 200 characters from [A-Za-z0-9_.-] "
            f"(a hex digest), starting with a letter or digit",
            digest=name if isinstance(name, str) else None,
            url=url,
        )
    return name


def check_format(marker: bytes | None, url: str) -> None:
    """Refuse a store whose marker says it was written by a newer mlflowkit.

    An older library must never read (or "repair") files it does not understand: it stops with
    a ``StoreError`` before touching anything. A marker that cannot be parsed is left to the
    owner check (``_trust``), which names what is wrong with it.
    """
    if not marker:
        return
    import orjson

    try:
        doc = orjson.loads(marker)
    except ValueError:
        return
    found = doc.get("format", 1) if isinstance(doc, dict) else 1
    if isinstance(found, int) and not isinstance(found, bool) and found > STORE_FORMAT:
        made_by = doc.get("created_by", "a newer version")
        raise StoreError(
            f"the store at {url} was written by a newer mlflowkit ({made_by}; store format "
            f"{found}, this mlflowkit reads up to {STORE_FORMAT}). Upgrade mlflowkit on this "
            "machine: pip install -U mlflowkit. Nothing was read or changed.",
            url=url,
        )
