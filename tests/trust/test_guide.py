"""The governance guide's commands, run in order in a shell (three keys on one machine)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guides" / "governance.md"


def test_the_governance_guide_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 5
    script = "set -euo pipefail\n" + "\n".join(blocks)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOWKIT_KEY")}
    env.update(
        MLFLOWKIT_KEYS_DIR=str(tmp_path / "keys"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
    )
    out = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "AccessDenied" in out.stderr and "lacks the admin role" in out.stderr
    assert "all objects verified" in out.stdout
    for action in ("policy", "promoter", "publisher"):
        assert action in out.stdout
    import mlflowkit as mk

    assert "lacks the promoter role for stage 'mvp'" in out.stderr  # Dan tried
    store = mk.Store(tmp_path / "team-store")
    audit = store.audit()
    actions = [e.action for e in audit]
    assert actions == ["policy"] * 4 + ["publish"] + ["promote"] * 3 + ["policy"]
    assert len({e.by for e in audit if e.action == "policy"}) == 1  # all by Ada
    assert store.policy.version == 5
    # the promote step is real: Rita's signed promotion holds mvp, even after her revocation
    dan = next(e.by for e in audit if e.action == "publish")
    rita = audit[7].by
    mvp = store.artifact("digits/digits-model@mvp")
    assert (mvp.version, mvp.stage, mvp.created_by) == (1, "mvp", dan)
    assert [(p.to_stage, p.by == rita) for p in store.history("digits/digits-model")] == [
        ("poc", False),
        ("prototype", False),
        ("mvp", True),
    ]
    assert store.history("digits/digits-model")[-1].reason == "passed the release review"
    assert store.verify() == []
