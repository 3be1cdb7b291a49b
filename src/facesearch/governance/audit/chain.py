"""What chains the events and pins the chain: signed checkpoints, their Ed25519 keys, and the
RFC 9162 Merkle tree over the event hashes (roots, inclusion paths, the growing frontier)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from facesearch.errors import FaceSearchError
from facesearch.governance.audit.event import CHAIN_VERSION, canonical_json
from facesearch.storage.crypto import create_secret_file


class AuditKeyError(FaceSearchError):
    """The audit signing key cannot be read, or a given public key is not an Ed25519 key."""

    code = "audit_key"


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement "the chain's event ``seq`` has hash ``head_hash``", made at ``ts``
    (seconds since the epoch). ``signature`` is hex Ed25519 over :meth:`message`;
    ``key_fingerprint`` is the hex SHA-256 of the raw 32-byte public key."""

    seq: int
    head_hash: str
    ts: float
    signature: str
    key_fingerprint: str
    tree_root: str | None = None
    """Hex RFC 9162 Merkle tree root over the first ``seq`` event hashes (signed with the
    rest; None in checkpoints made before the tree)."""

    def message(self) -> bytes:
        body: dict[str, object] = {"v": CHAIN_VERSION, "type": "facesearch-audit-checkpoint",
                                   "seq": self.seq, "head_hash": self.head_hash, "ts": self.ts,
                                   "key": self.key_fingerprint}
        if self.tree_root is not None:
            body["tree_root"] = self.tree_root
        return canonical_json(body)

    def to_json(self) -> dict[str, object]:
        return {"seq": self.seq, "head_hash": self.head_hash, "ts": self.ts,
                "signature": self.signature, "key_fingerprint": self.key_fingerprint,
                "tree_root": self.tree_root}


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (as :meth:`AuditLog.public_key` exports it)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise AuditKeyError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyError("the public key is not an Ed25519 key")
    return key


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Load the signing key, or create it (0600 PEM) without clobbering one made concurrently."""
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        create_secret_file(path, pem)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise AuditKeyError(f"cannot read the audit signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path} is not an Ed25519 private key")
    return key


# -- Merkle tree (RFC 9162, section 2.1) ----------------------------------------------------
# Leaves are the events' 32-byte hashes, in seq order: leaf i (from 0) is event seq i + 1.

def merkle_leaf(event_hash_hex: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(event_hash_hex)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (:func:`merkle_leaf`)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)  # largest power of 2 below n
    return _node(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def inclusion_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(index, leaves): the audit path of leaf ``index``, bottom up."""
    if len(leaves) <= 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if index < k:
        return inclusion_path(index, leaves[:k]) + [merkle_root(leaves[k:])]
    return inclusion_path(index - k, leaves[k:]) + [merkle_root(leaves[:k])]


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes],
                     root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: whether ``leaf`` is leaf ``index`` of the tree of ``size``
    leaves whose root is ``root``."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


class Frontier:
    """The roots of the perfect subtrees of a growing Merkle tree: O(log n) state from which
    the root of the first n leaves follows."""

    def __init__(self, size: int = 0, nodes: Sequence[tuple[int, bytes]] = ()) -> None:
        self.size = size
        self.nodes = list(nodes)  # (leaf count, hash), counts decreasing

    def add(self, leaf: bytes) -> None:
        self.nodes.append((1, leaf))
        self.size += 1
        while len(self.nodes) >= 2 and self.nodes[-1][0] == self.nodes[-2][0]:
            (n, left), (_, right) = self.nodes[-2], self.nodes[-1]
            self.nodes[-2:] = [(2 * n, _node(left, right))]

    def root(self) -> bytes:
        if not self.nodes:
            return hashlib.sha256(b"").digest()
        r = self.nodes[-1][1]
        for _, h in reversed(self.nodes[:-1]):
            r = _node(h, r)
        return r

    def dump(self) -> str:
        return json.dumps([[n, h.hex()] for n, h in self.nodes])

    @classmethod
    def load(cls, size: int, text: str) -> Frontier:
        nodes = [(int(n), bytes.fromhex(h)) for n, h in json.loads(text)]
        if sum(n for n, _ in nodes) != size:
            raise ValueError("frontier does not add up to its size")
        return cls(size, nodes)
