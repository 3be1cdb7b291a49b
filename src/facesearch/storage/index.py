"""Vector index: exact inner-product search over unit vectors with FAISS.

Ids are the metadata store's face row ids (int64). The index is a cache of the store: it can
be saved to and loaded from a file (written atomically), and :meth:`VectorIndex.reconcile`
brings it in line with the store's ids after a crash or another process's writes.
Similarity scores are cosines in [-1, 1] (vectors are L2-normalised).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from facesearch.errors import EncryptionError
from facesearch.storage.crypto import Sealer, is_sealed
from facesearch.types import FloatArray, IntArray

_AAD = b"facesearch-vector-index"


class VectorIndex:
    """A thread-safe FAISS ``IndexIDMap2(IndexFlatIP)``: add, remove, search, save, load."""

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> IntArray:
        """All ids in the index (int64), in insertion order."""
        with self._lock:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def add(self, ids: npt.ArrayLike, vectors: FloatArray) -> None:
        ids_ = np.ascontiguousarray(ids, dtype=np.int64)
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim or len(vecs) != len(ids_):
            raise ValueError(f"expected ({len(ids_)}, {self.dim}) vectors, got {vecs.shape}")
        if len(ids_):
            with self._lock:
                self._index.add_with_ids(vecs, ids_)

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``ids``; returns how many were present."""
        ids_ = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids_):
            return 0
        with self._lock:
            return int(self._index.remove_ids(faiss.IDSelectorBatch(ids_)))

    def vectors(self, ids: npt.ArrayLike) -> FloatArray:
        """The stored vectors of ``ids`` (each must be present)."""
        ids_ = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock:
            if not len(ids_):
                return np.zeros((0, self.dim), np.float32)
            return self._index.reconstruct_batch(ids_).astype(np.float32)

    def search(self, queries: FloatArray, k: int) -> tuple[FloatArray, IntArray]:
        """Top-``k`` cosines and ids for each query ((Q, D) -> (Q, k), (Q, k)); id -1 pads."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"expected (Q, {self.dim}) queries, got {q.shape}")
        with self._lock:
            k = max(0, min(int(k), len(self)))
            if k == 0 or not len(q):
                return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
            sims, ids = self._index.search(q, k)
        return sims.astype(np.float32), ids.astype(np.int64)

    def reconcile(self, truth_ids: IntArray,
                  fetch: Callable[[IntArray], FloatArray]) -> tuple[int, int]:
        """Make the index hold exactly ``truth_ids``: drop others, add missing ones.

        ``fetch(ids)`` returns the vectors for ids missing from the index. Returns
        ``(added, removed)``.
        """
        with self._lock:
            have = self.ids()
            extra = np.setdiff1d(have, truth_ids, assume_unique=True)
            missing = np.setdiff1d(truth_ids, have, assume_unique=True)
            removed = self.remove(extra)
            if len(missing):
                self.add(missing, fetch(missing))
            return int(len(missing)), removed

    def save(self, path: Path, sealer: Sealer | None = None) -> None:
        """Write the index atomically (temp file, fsync, rename); sealed when ``sealer``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with self._lock:
            data = faiss.serialize_index(self._index).tobytes()
        if sealer is not None:
            data = sealer.seal(data, _AAD)
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, dim: int, sealer: Sealer | None = None) -> VectorIndex:
        """Read an index written by :meth:`save`. A missing, unreadable or undecryptable file
        gives an empty index (the caller reconciles it with the database)."""
        if not path.is_file():
            return cls(dim)
        data = path.read_bytes()
        if is_sealed(data):
            if sealer is None:
                return cls(dim)
            try:
                data = sealer.open(data, _AAD)
            except EncryptionError:
                return cls(dim)
        try:
            index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
        except RuntimeError:
            return cls(dim)
        if index.d == dim and isinstance(index, faiss.IndexIDMap2):
            return cls(dim, index)
        return cls(dim)
