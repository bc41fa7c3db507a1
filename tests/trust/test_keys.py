"""Signing keys: made owner-only, listed, chosen per store or per process, never replaced."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import mlflowkit as mk
from mlflowkit.cli import main
from mlflowkit.trust import keys

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "keys"
    monkeypatch.setenv("MLFLOWKIT_KEYS_DIR", str(folder))
    monkeypatch.delenv("MLFLOWKIT_KEY", raising=False)
    keys._reset_cache()
    yield folder
    keys._reset_cache()


def test_keys_new_is_owner_only_prints_its_id_and_is_never_replaced(own_keys: Path) -> None:
    out = CliRunner().invoke(main, ["keys", "new", "alice"])
    assert out.exit_code == 0, out.output
    key_id = out.output.strip()
    assert keys.KEY_ID.fullmatch(key_id)
    private = own_keys / "alice.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(own_keys.stat().st_mode) & 0o077 == 0
    assert key_id in (own_keys / "alice.pub").read_text()
    before = private.read_bytes()
    again = CliRunner().invoke(main, ["keys", "new", "alice"])
    assert again.exit_code == 1 and "exists already" in again.output
    assert private.read_bytes() == before
    listed = CliRunner().invoke(main, ["keys", "list"])
    assert "alice" in listed.output and key_id in listed.output
    bad = CliRunner().invoke(main, ["keys", "new", "../evil"])
    assert bad.exit_code == 1 and "invalid key name" in bad.output


def test_the_default_key_is_made_on_first_use(own_keys: Path, tmp_path: Path) -> None:
    assert not own_keys.exists()
    store = mk.Store(tmp_path / "store")
    store.put({1, 2})  # a pickle: signed
    assert (own_keys / "default.key").exists()
    assert store.owner == store.key_id == keys.load_signer().key_id


def test_store_key_and_the_environment_choose_the_signing_key(
    own_keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = keys.new_key("alice")
    bob = keys.new_key("bob")
    assert mk.Store(tmp_path / "a", key="alice").key_id == alice.key_id
    assert mk.Store(tmp_path / "a", key=str(bob.path)).key_id == bob.key_id
    monkeypatch.setenv("MLFLOWKIT_KEY", "bob")
    assert mk.Store(tmp_path / "a").key_id == bob.key_id
    monkeypatch.setenv("MLFLOWKIT_KEY", "nobody")
    with pytest.raises(mk.MlflowkitError, match="no key file"):
        mk.Store(tmp_path / "b").put({1})


def test_xdg_config_home_is_honoured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOWKIT_KEYS_DIR", "MLFLOWKIT_KEY")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = str(ROOT)
    code = "from mlflowkit.trust import keys; print(keys.keys_dir()); keys.load_signer()"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(tmp_path / "config" / "mlflowkit" / "keys")
    assert (tmp_path / "config" / "mlflowkit" / "keys" / "default.key").exists()
    assert not (tmp_path / "home").exists()
