"""Access keys: create, list, revoke, look up; secrets sealed at rest under a 0600 master key."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from facesearch.config import Settings
from facesearch.errors import EncryptionError, InvalidParameterError
from facesearch.keys import MASTER_KEY_FILE, KeyNotFoundError, Role
from facesearch.service import FaceSearch


def test_create_list_revoke_lookup(home: Path) -> None:
    with FaceSearch(Settings(home=home)) as fs:
        new = fs.keys.create("searcher", label="analyst 7")
        assert new.info.key_id.startswith("FSAK") and len(new.info.key_id) == 20
        assert new.info.role is Role.SEARCHER and new.info.active and len(new.secret) >= 40
        found = fs.keys.lookup(new.info.key_id)
        assert found.secret == new.secret and found.info.label == "analyst 7"
        other = fs.keys.create(Role.ADMIN)
        assert [k.key_id for k in fs.keys.list()] == [new.info.key_id, other.info.key_id]
        revoked = fs.keys.revoke(new.info.key_id)
        assert not revoked.active and revoked.revoked_at is not None
        assert fs.keys.revoke(new.info.key_id).revoked_at == revoked.revoked_at  # idempotent
        with pytest.raises(KeyNotFoundError):
            fs.keys.lookup(new.info.key_id)
        assert [k.key_id for k in fs.keys.list(include_revoked=False)] == [other.info.key_id]
        with pytest.raises(KeyNotFoundError):
            fs.keys.revoke("FSAKNOSUCHKEY")
        with pytest.raises(InvalidParameterError):
            fs.keys.create("root")


def test_secrets_are_sealed_at_rest(home: Path) -> None:
    with FaceSearch(Settings(home=home)) as fs:
        new = fs.keys.create("indexer")
    master = home / MASTER_KEY_FILE
    assert stat.S_IMODE(master.stat().st_mode) == 0o600
    assert stat.S_IMODE(master.parent.stat().st_mode) == 0o700
    for f in home.glob("facesearch.db*"):
        assert new.secret.encode() not in f.read_bytes()
    # Another master key cannot open the secrets.
    other = base64.b64encode(os.urandom(32)).decode()
    with (FaceSearch(Settings(home=home, keys_master_key=other)) as fs,
          pytest.raises(EncryptionError)):
        fs.keys.lookup(new.info.key_id)


def test_master_key_from_settings(home: Path) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    with FaceSearch(Settings(home=home, keys_master_key=key)) as fs:
        new = fs.keys.create("auditor")
        assert fs.keys.lookup(new.info.key_id).secret == new.secret
    assert not (home / MASTER_KEY_FILE).exists()
    with (pytest.raises(EncryptionError),
          FaceSearch(Settings(home=home, keys_master_key="dG9vIHNob3J0")) as fs):
        fs.keys.create("auditor")


def test_cli(home: Path) -> None:
    def run(*args: str) -> str:
        env = {**os.environ, "FACESEARCH_HOME": str(home)}
        proc = subprocess.run([sys.executable, "-m", "facesearch", "keys", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    made = json.loads(run("create", "--role", "searcher", "--label", "cli", "--json"))
    assert made["role"] == "searcher" and made["secret"] and made["active"]
    listed = json.loads(run("list", "--json"))["keys"]
    assert [k["key_id"] for k in listed] == [made["key_id"]]
    assert all("secret" not in k for k in listed)
    assert json.loads(run("revoke", made["key_id"], "--json"))["active"] is False
    with FaceSearch(Settings(home=home)) as fs, pytest.raises(KeyNotFoundError):
        fs.keys.lookup(made["key_id"])
