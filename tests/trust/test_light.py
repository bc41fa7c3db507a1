"""Verifying costs a fully cached run no Ed25519 work once this user has checked the signatures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import json, sys
import mlflowkit as mk
from tests.trust.helpers import pair
run = pair.plan(n=30).run(store=mk.Store(sys.argv[1]), progress=False)
print(json.dumps({
    "statuses": sorted({s.status for s in run.steps if not s.internal}),
    "crypto": "cryptography" in sys.modules,
}))
"""


def test_a_cached_rerun_in_a_fresh_process_needs_no_cryptography(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOWKIT_CACHE_DIR": str(tmp_path / "c")}
    url = str(tmp_path / "store")

    def child() -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-c", CODE, url],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    first = child()
    assert first["statuses"] == ["executed"] and first["crypto"]  # it signed
    second = child()  # verifies the pack once and remembers it
    assert second["statuses"] == ["cached"]
    third = child()
    assert third == {"statuses": ["cached"], "crypto": False}
