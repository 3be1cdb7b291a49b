"""Optional encryption at rest of face vectors, vector-index files and crops (AES-256-GCM).

The key is 32 bytes, given base64-encoded in ``FACESEARCH_ENCRYPTION_KEY`` or in the file
named by ``FACESEARCH_ENCRYPTION_KEY_FILE``. Each sealed blob is ``MAGIC + 12-byte nonce +
ciphertext + 16-byte tag``; the associated data binds a blob to its purpose (e.g. a face row),
so a blob moved elsewhere fails to open.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from facesearch.errors import EncryptionError

if TYPE_CHECKING:
    from facesearch.config import Settings

MAGIC = b"FSE1"


class Sealer:
    """AES-256-GCM seal/open with a fixed key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise EncryptionError(f"encryption key must be 32 bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, data: bytes, aad: bytes = b"") -> bytes:
        nonce = os.urandom(12)
        return MAGIC + nonce + self._aead.encrypt(nonce, data, aad)

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 12 + 16:
            raise EncryptionError("data is not sealed by facesearch (no FSE1 header)")
        nonce = blob[len(MAGIC):len(MAGIC) + 12]
        try:
            return self._aead.decrypt(nonce, blob[len(MAGIC) + 12:], aad)
        except InvalidTag:
            raise EncryptionError("cannot decrypt: wrong key or corrupted data") from None


def is_sealed(blob: bytes) -> bool:
    return blob.startswith(MAGIC)


def sealer_of(settings: Settings) -> Sealer | None:
    """The at-rest sealer the settings configure, or None when encryption at rest is off."""
    key = settings.encryption_key.get_secret_value() if settings.encryption_key else None
    return load_sealer(key, settings.encryption_key_file)


def load_sealer(key_b64: str | None, key_file: Path | None) -> Sealer | None:
    """The sealer for a base64 key or a file holding one; None when neither is given."""
    raw = key_b64
    if not raw and key_file is not None:
        try:
            raw = key_file.read_text().strip()
        except OSError as exc:
            raise EncryptionError(
                f"cannot read encryption key file {key_file}: {exc.strerror}") from None
    if not raw:
        return None
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionError("encryption key must be base64 of 32 random bytes") from None
    return Sealer(key)


def create_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data`` (mode 0600, its folder 0700) unless it exists. Atomic:
    the file appears whole (written and synced under a temporary name, then hard-linked), so
    a process starting at the same time reads either nothing or the whole secret, and never
    clobbers a secret another process created first."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if another process got there first
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
