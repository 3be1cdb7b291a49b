"""Access keys: create, list, revoke, look up; secrets sealed at rest under a 0600 master key."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from facesearch.config import Settings
from facesearch.errors import EncryptionError, InvalidParameterError
from facesearch.governance.keys import MASTER_KEY_FILE, KeyNotFoundError, Role
from facesearch.service import FaceSearch

from ..clirun import run_cli

Make = Callable[..., Settings]


@pytest.mark.databases
def test_create_list_revoke_lookup(settings: Make) -> None:
    with FaceSearch(settings()) as fs:
        new = fs.keys.create("searcher", label="analyst 7")
        assert new.info.key_id.startswith("FSAK") and len(new.info.key_id) == 20
        assert new.info.roles == (Role.SEARCHER,) and new.info.role == "searcher"
        assert new.info.active and len(new.secret) >= 40
        found = fs.keys.lookup(new.info.key_id)
        assert found.secret == new.secret and found.info.label == "analyst 7"
        other = fs.keys.create(Role.ADMIN)
        assert [k.key_id for k in fs.keys.list_keys()] == [new.info.key_id, other.info.key_id]
        revoked = fs.keys.revoke(new.info.key_id)
        assert not revoked.active and revoked.revoked_at is not None
        assert fs.keys.revoke(new.info.key_id).revoked_at == revoked.revoked_at  # idempotent
        with pytest.raises(KeyNotFoundError):
            fs.keys.lookup(new.info.key_id)
        assert [k.key_id for k in fs.keys.list_keys(include_revoked=False)] == [other.info.key_id]
        with pytest.raises(KeyNotFoundError):
            fs.keys.revoke("FSAKNOSUCHKEY")
        with pytest.raises(InvalidParameterError):
            fs.keys.create("root")
        with pytest.raises(InvalidParameterError):
            fs.keys.create([])


@pytest.mark.databases
def test_a_key_may_hold_several_roles(settings: Make) -> None:
    """Separation of duties is the default (one role); a key for one program may hold several,
    stored in Role order however they were given, and audited with them."""
    with FaceSearch(settings()) as fs:
        app = fs.keys.create(["searcher", Role.ADMIN, "indexer", "searcher"], label="app")
        assert app.info.roles == (Role.ADMIN, Role.INDEXER, Role.SEARCHER)
        assert app.info.role == "admin,indexer,searcher"
        assert fs.keys.lookup(app.info.key_id).info.roles == app.info.roles
        assert fs.keys.create("admin,auditor").info.roles == (Role.ADMIN, Role.AUDITOR)
        with pytest.raises(InvalidParameterError, match="unknown role 'root'"):
            fs.keys.create(["indexer", "root"])
        events, _ = fs.audit.query(operation="key.create")
    made = [e.event.details for e in events if e.event.details["key_id"] == app.info.key_id]
    assert made == [{**made[0], "key_role": "admin,indexer,searcher"}]


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
        proc = run_cli("keys", *args, env={"FACESEARCH_HOME": str(home)})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    made = json.loads(run("create", "--role", "searcher", "--label", "cli", "--json"))
    assert made["role"] == "searcher" and made["secret"] and made["active"]
    both = json.loads(run("create", "--role", "indexer", "--role", "searcher", "--json"))
    assert both["roles"] == ["indexer", "searcher"] and both["role"] == "indexer,searcher"
    listed = json.loads(run("list", "--json"))  # a list, as GET /v1/keys answers
    assert [k["key_id"] for k in listed] == [made["key_id"], both["key_id"]]
    assert all("secret" not in k for k in listed)
    assert json.loads(run("revoke", made["key_id"], "--json"))["active"] is False
    run("revoke", both["key_id"])
    with FaceSearch(Settings(home=home)) as fs, pytest.raises(KeyNotFoundError):
        fs.keys.lookup(made["key_id"])


# -- a copy of the data directory yields no secret (issue 11, item 10) ----------------------

def _modes(home: Path) -> dict[str, int]:
    return {str(p.relative_to(home)): p.stat().st_mode & 0o777 for p in home.rglob("*")
            if not p.is_symlink()}


def test_data_files_are_private_and_existing_ones_fixed_on_open(home: Path,
                                                               pipeline: object) -> None:
    old = os.umask(0o022)  # a usual umask: files 0644, folders 0755
    try:
        with FaceSearch(Settings(home=home), pipeline=pipeline) as fs:  # type: ignore[arg-type]
            fs.keys.create("searcher")
            fs.collections.create("c")
            from ..conftest import face

            fs.collections.index_image("c", face("obama.jpg"))
        modes = _modes(home)
        assert {"facesearch.db", "audit.db", MASTER_KEY_FILE} <= set(modes)
        assert any(k.startswith("indexes/") for k in modes)
        for name, mode in modes.items():
            want = 0o700 if (home / name).is_dir() else 0o600
            assert mode == want, (name, oct(mode))
        assert home.stat().st_mode & 0o777 == 0o700
        os.umask(0o022)
        for p in home.rglob("*"):  # as an older version left them
            p.chmod(0o755 if p.is_dir() else 0o644)
        home.chmod(0o755)
        with FaceSearch(Settings(home=home), pipeline=pipeline):  # type: ignore[arg-type]
            pass
        assert all(m == (0o700 if (home / n).is_dir() else 0o600)
                   for n, m in _modes(home).items())
        assert home.stat().st_mode & 0o777 == 0o700
    finally:
        os.umask(old)


def test_master_key_file_outside_the_data_directory(home: Path, tmp_path: Path) -> None:
    """With the master key in a file elsewhere, the data directory holds no master key and a
    copy of it alone opens no secret."""
    elsewhere = tmp_path / "secrets" / "master.key"
    with FaceSearch(Settings(home=home, keys_master_key_file=elsewhere)) as fs:
        new = fs.keys.create("admin")
    assert not (home / MASTER_KEY_FILE).exists()
    assert elsewhere.stat().st_mode & 0o777 == 0o600
    assert len(base64.b64decode(elsewhere.read_text().strip())) == 32
    with FaceSearch(Settings(home=home, keys_master_key_file=elsewhere)) as fs:
        assert fs.keys.lookup(new.info.key_id).secret == new.secret
    with FaceSearch(Settings(home=home)) as fs:  # the data directory alone
        with pytest.raises(EncryptionError):
            fs.keys.lookup(new.info.key_id)
