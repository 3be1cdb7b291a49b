"""Sealing at rest and the secret files the service creates for itself."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from facesearch.errors import EncryptionError
from facesearch.storage.crypto import Sealer, create_secret_file


def test_a_sealed_blob_opens_only_with_its_key_and_its_purpose() -> None:
    key = os.urandom(32)
    blob = Sealer(key).seal(b"vector bytes", b"face:7")
    assert b"vector bytes" not in blob
    assert Sealer(key).open(blob, b"face:7") == b"vector bytes"
    for other_key, aad in ((os.urandom(32), b"face:7"), (key, b"face:8")):
        with pytest.raises(EncryptionError):
            Sealer(other_key).open(blob, aad)


def test_a_secret_file_appears_whole_once_and_is_never_clobbered(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    secrets = [os.urandom(32) for _ in range(16)]
    with ThreadPoolExecutor(8) as pool:  # many starters at once: one wins, none sees a part
        list(pool.map(lambda s: create_secret_file(path, s), secrets))
    kept = path.read_bytes()
    assert kept in secrets
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    create_secret_file(path, b"another")
    assert path.read_bytes() == kept
    assert sorted(p.name for p in path.parent.iterdir()) == ["master.key"]  # no temporaries
