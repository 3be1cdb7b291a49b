"""Vector index of one collection: exact while small, inverted file when large, with FAISS.

Ids are the metadata store's face row ids (int64); vectors are L2-normalised, scores cosines
in [-1, 1]. The index is a cache of the store: it is saved to and loaded from one file
(written atomically, sealed when encryption at rest is on), and :meth:`VectorIndex.reconcile`
brings it in line with the store's ids after a crash or another process's writes.

Two forms, chosen by size (:meth:`VectorIndex.build`, :meth:`VectorIndex.needs_rebuild`):

- ``flat`` (fewer than :data:`LARGE` vectors): exact inner product over every vector
  (``IndexIDMap2(IndexFlatIP)``, 512 bytes a vector);
- ``ivf`` (from :data:`LARGE` vectors on): an inverted file of ``nlist`` k-means cells with
  4-bit product-quantised codes scanned with SIMD (``IVF<nlist>,PQ64x4fs``, 32 bytes a
  vector), of which the share :func:`probe_fraction_for` gives (:data:`PROBE_FRACTION` up to
  :data:`PROBE_FULL` vectors, less past it) of the cells nearest the query are scanned; its
  best :func:`shortlist` candidates are scored again on 8-bit scalar-quantised copies of the
  vectors (``IndexIDMap2(SQ8)``, 128 bytes), and the best of those exactly, on the store's own
  vectors (``exact``), so that every reported similarity is exact. Adds and removals go
  straight into both parts (no rebuild); :meth:`needs_rebuild` says when the cells no longer
  fit the data (it grew or shrank 4x since they were trained, or drifted: the cells became
  :data:`DRIFT` times less balanced), and the caller rebuilds in the background
  (:class:`facesearch.storage.indexes.IndexCache`).

The probe fraction, the codes and the shortlists are set on real faces (SFace embeddings of
lfw-dev people) among 5 and 20 million face-like vectors (mixtures of real embeddings),
against exact search: at 5 million the mate is found for 99.7 % of the probes whose mate
exact search ranks in its top 10 above the default threshold, and 98 % of the exact top 10
above the threshold is returned (``bench/index_scale.py``, docs/benchmarks.md; 20 million:
there). A person's photos fall in different cells, so a large share of the cells must be
scanned (a smaller one as the cells get more numerous and smaller); the 4-bit codes make
that cheap, and real faces crowd, so the shortlist from the codes must be long.
"""

from __future__ import annotations

import math
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from facesearch.errors import EncryptionError
from facesearch.storage.crypto import Sealer, is_sealed
from facesearch.types import FloatArray, IntArray

_AAD = b"facesearch-vector-index"
_MAGIC = b"FSVX"
_FORMAT = 2
"""1: no sync state; 2: the :class:`SyncState` the index holds, after the parts' count."""

_STATE = "<qqd"

LARGE = 100_000
"""Vectors from which a collection's index is an inverted file (below: exact)."""
PROBE_FRACTION = 0.6
"""Share of the inverted file's cells scanned per query, up to :data:`PROBE_FULL` vectors
(:func:`probe_fraction_for`)."""
PROBE_FULL = 5_000_000
"""Vectors up to which :data:`PROBE_FRACTION` of the cells are scanned; past it the share
falls as ``1 / sqrt(n)``."""
REGROW = 4.0
"""An inverted file is rebuilt when it holds this many times more (or fewer) vectors than it
was trained on."""
DRIFT = 1.5
"""An inverted file is rebuilt when its cells' imbalance (FAISS's imbalance factor: 1 when
every cell holds as many vectors) grew this many times over its value when the index was
built or opened: the vectors added since no longer follow the data the cells were trained on
(searches then scan longer lists)."""
TRAIN_SAMPLE = 64
"""Training vectors per cell (k-means), at most :data:`TRAIN_MAX`."""
TRAIN_MAX = 500_000
PQ_SUBVECTORS = 64
"""4-bit product quantisation: 64 sub-vectors of 2 dimensions, 32 bytes a vector (32
sub-vectors, 16 bytes, rank real faces among crowded ones too coarsely: docs/benchmarks.md)."""

Fetch = Callable[[IntArray], FloatArray]
"""Exact vectors of ids, from the store."""


@dataclass(frozen=True)
class SyncState:
    """What of the database an index holds: the collection's ``generation`` (deletions
    applied) and ``top_row`` (faces added up to that row); ``created_at`` ties it to one
    collection (and database)."""

    generation: int
    top_row: int
    created_at: float


def cells_for(n: int) -> int:
    """Inverted-file cells for ``n`` vectors: about 2,500 vectors a cell, a power of two
    from 256 to 16,384."""
    want = max(256, min(16_384, n // 2_500))
    return 1 << (want.bit_length() - 1)


def probe_fraction_for(n: int) -> float:
    """Share of the inverted file's cells scanned per query for an index trained on ``n``
    vectors: :data:`PROBE_FRACTION` up to :data:`PROBE_FULL` vectors, then
    ``PROBE_FRACTION * sqrt(PROBE_FULL / n)`` (0.3 at 20 million), so that the vectors scanned
    grow as ``sqrt(n)``: 3 million at 5 million faces, 6 million at 20 million.

    Larger collections have more and smaller cells (:func:`cells_for`), which follow the
    faces more closely, so a smaller share of them holds a probe's mates: on real faces among
    20 million face-like vectors, the cells nearest the probe hold its mate (when exact search
    ranks it in the top 10 above the threshold) for 98.9 % of the probes at 0.3 of 1,024
    cells, 99.3 % of 2,048 and 99.8 % of 4,096 (docs/benchmarks.md)."""
    if n <= PROBE_FULL:
        return PROBE_FRACTION
    return PROBE_FRACTION * math.sqrt(PROBE_FULL / n)


def shortlist(k: int, n: int = 0) -> tuple[int, int]:
    """(candidates from the 4-bit codes, of which kept after the 8-bit rescoring) for top-k
    in an index trained on ``n`` vectors: 1,024 and 64 for the top 10 up to
    :data:`PROBE_FULL` vectors, 2,048 and 64 past it (at 5 million faces 256 candidates held
    60 % of the exact top 10 above the threshold, 1,024 hold 98 %; at 20 million, four times
    as crowded, 1,024 hold 96 %, 2,048 98.5 %, for 2 ms more a query: docs/benchmarks.md)."""
    first = 1024 if n <= PROBE_FULL else 2048
    return max(10 * k, first), max(2 * k, 64)


class VectorIndex:
    """A thread-safe collection index in one of two forms (see the module's docstring)."""

    def __init__(self, dim: int, index: faiss.Index | None = None,
                 refine: faiss.Index | None = None, trained_on: int = 0) -> None:
        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._refine = refine
        """8-bit copies of the vectors, by id (the inverted file's second stage), or None."""
        self.trained_on = trained_on
        """How many vectors the inverted file's cells were trained for (0: flat)."""
        self._lock = threading.RLock()
        self.saved_state: SyncState | None = None
        """The state the index's file recorded when loaded (None: unknown, reconcile)."""
        self._baseline_imbalance: float | None = None
        """The cells' imbalance when the inverted file was filled or opened (None: flat)."""
        self.shortlists: Callable[[int], tuple[int, int]] = lambda k: shortlist(k, trained_on)
        """(4-bit candidates, 8-bit survivors) for top-k (benchmarks tune it)."""
        if self._refine is not None:
            self.probe_fraction = probe_fraction_for(trained_on)
            self._baseline_imbalance = self.imbalance()

    @property
    def probe_fraction(self) -> float:
        """Share of the inverted file's cells scanned per query (flat: 1)."""
        if self._refine is None:
            return 1.0
        ivf = faiss.extract_index_ivf(self._index)
        return float(ivf.nprobe / ivf.nlist)

    @probe_fraction.setter
    def probe_fraction(self, value: float) -> None:
        if self._refine is not None:
            ivf = faiss.extract_index_ivf(self._index)
            ivf.nprobe = max(1, math.ceil(value * ivf.nlist))

    def imbalance(self) -> float | None:
        """FAISS's imbalance factor of the inverted file's cells (1.0: all equal; None: flat
        or empty)."""
        if self._refine is None or len(self) == 0:
            return None
        lists = faiss.extract_index_ivf(self._index).invlists
        assert lists is not None
        return float(lists.imbalance_factor())

    @property
    def kind(self) -> str:
        return "flat" if self._refine is None else "ivf"

    @property
    def exact_vectors(self) -> bool:
        """Whether :meth:`vectors` gives the vectors exactly (flat) or 8-bit copies (ivf)."""
        return self._refine is None

    def __len__(self) -> int:
        return int(self._index.ntotal)

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def build(cls, dim: int, ids: npt.ArrayLike, vectors: FloatArray | Fetch,
              *, large: int = LARGE, subvectors: int = PQ_SUBVECTORS,
              cells: int | None = None) -> VectorIndex:
        """The index of these vectors in the form their number calls for. ``vectors`` is the
        (N, dim) array, or a ``fetch(ids)`` giving them a chunk at a time (memory bounded by
        the chunk, for large collections read from the store). ``subvectors``: 4-bit
        sub-quantisers of the inverted file's codes (``subvectors / 2`` bytes a vector);
        ``cells``: its cells (default :func:`cells_for`); benchmarks vary both."""
        ids_ = np.ascontiguousarray(ids, dtype=np.int64)
        fetch = vectors if callable(vectors) else _slicer(ids_, vectors)
        if len(ids_) < large:
            out = cls(dim)
            for chunk in _chunks(ids_):
                out.add(chunk, fetch(chunk))
            return out
        nlist = cells or cells_for(len(ids_))
        sample = np.sort(np.random.default_rng(len(ids_)).choice(
            ids_, min(len(ids_), TRAIN_SAMPLE * nlist, TRAIN_MAX), replace=False))
        train = np.ascontiguousarray(fetch(sample), np.float32)
        index = faiss.index_factory(dim, f"IVF{nlist},PQ{subvectors}x4fs",
                                    faiss.METRIC_INNER_PRODUCT)
        index.train(train)
        refine = faiss.IndexIDMap2(faiss.IndexScalarQuantizer(
            dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT))
        refine.train(train)
        out = cls(dim, index, refine, len(ids_))
        for chunk in _chunks(ids_):
            out.add(chunk, fetch(chunk))
        out._baseline_imbalance = out.imbalance()
        return out

    def needs_rebuild(self, large: int = LARGE) -> bool:
        """Whether this index no longer suits its data: flat past ``large`` vectors; an
        inverted file below half of ``large``, grown or shrunk :data:`REGROW` times since its
        cells were trained, or with cells :data:`DRIFT` times less balanced than when it was
        built or opened."""
        n = len(self)
        if self._refine is None:
            return n >= large
        if n < large // 2 or not self.trained_on / REGROW <= n <= self.trained_on * REGROW:
            return True
        now, then = self.imbalance(), self._baseline_imbalance
        if then is None:  # opened or built empty: this is its state
            self._baseline_imbalance = now
            return False
        return now is not None and now > DRIFT * then

    # -- contents ----------------------------------------------------------------------------

    def ids(self) -> IntArray:
        """All ids in the index (int64)."""
        with self._lock:
            if self._refine is None:
                return faiss.vector_to_array(self._index.id_map).astype(np.int64)
            return faiss.vector_to_array(self._refine.id_map).astype(np.int64)

    def add(self, ids: npt.ArrayLike, vectors: FloatArray) -> None:
        ids_ = np.ascontiguousarray(ids, dtype=np.int64)
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim or len(vecs) != len(ids_):
            raise ValueError(f"expected ({len(ids_)}, {self.dim}) vectors, got {vecs.shape}")
        if len(ids_):
            with self._lock:
                self._index.add_with_ids(vecs, ids_)
                if self._refine is not None:
                    self._refine.add_with_ids(vecs, ids_)

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``ids``; returns how many were present."""
        ids_ = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids_):
            return 0
        with self._lock:
            n = int(self._index.remove_ids(faiss.IDSelectorBatch(ids_)))
            if self._refine is not None:
                self._refine.remove_ids(faiss.IDSelectorBatch(ids_))
            return n

    def vectors(self, ids: npt.ArrayLike) -> FloatArray:
        """The vectors of ``ids`` (each must be present): exact in the flat form, their 8-bit
        copies in the inverted file (within about 0.002 of each component)."""
        ids_ = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock:
            if not len(ids_):
                return np.zeros((0, self.dim), np.float32)
            store = self._index if self._refine is None else self._refine
            return store.reconstruct_batch(ids_).astype(np.float32)

    # -- search ------------------------------------------------------------------------------

    def search(self, queries: FloatArray, k: int,
               exact: Fetch | None = None) -> tuple[FloatArray, IntArray]:
        """Top-``k`` cosines and ids for each query ((Q, D) -> (Q, k), (Q, k)); id -1 pads.

        In the inverted file, ``exact(ids)`` gives the stored vectors that score the final
        shortlist (without it the scores are those of the 8-bit copies).
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"expected (Q, {self.dim}) queries, got {q.shape}")
        with self._lock:
            k = max(0, min(int(k), len(self)))
            if k == 0 or not len(q):
                return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
            if self._refine is None:
                sims, ids = self._index.search(q, k)
                return sims.astype(np.float32), ids.astype(np.int64)
            first, second = self.shortlists(k)
            _, cand = self._index.search(q, min(first, len(self)))
            approx = [self._rescore(q[i], cand[i][cand[i] >= 0], second) for i in range(len(q))]
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for i, ids_i in enumerate(approx):
            if exact is not None and len(ids_i):
                s = exact(ids_i) @ q[i]
            else:
                s = self.vectors(ids_i) @ q[i]
            order = np.argsort(-s, kind="stable")[:k]
            out_s[i, :len(order)] = s[order]
            out_i[i, :len(order)] = ids_i[order]
        return out_s, out_i

    def _rescore(self, query: FloatArray, ids: IntArray, keep: int) -> IntArray:
        """The ``keep`` best of ``ids`` by their 8-bit copies (decoded on this thread alone:
        :func:`_one_thread`)."""
        if len(ids) <= keep:
            return ids
        with _one_thread():
            s = self._refine.reconstruct_batch(ids) @ query  # type: ignore[union-attr]
        return ids[np.argpartition(-s, keep - 1)[:keep]]

    def reconcile(self, truth_ids: IntArray, fetch: Fetch) -> tuple[int, int]:
        """Make the index hold exactly ``truth_ids``: drop others, add missing ones.

        ``fetch(ids)`` returns the vectors for ids missing from the index. Returns
        ``(added, removed)``.
        """
        with self._lock:
            have = np.sort(self.ids())
            truth = np.sort(np.asarray(truth_ids, np.int64))
            extra = np.setdiff1d(have, truth, assume_unique=True)
            missing = np.setdiff1d(truth, have, assume_unique=True)
            removed = self.remove(extra)
            for chunk in _chunks(missing):
                self.add(chunk, fetch(chunk))
            return int(len(missing)), removed

    # -- files -------------------------------------------------------------------------------

    def save(self, path: Path, sealer: Sealer | None = None,
             state: SyncState | None = None) -> None:
        """Write the index atomically (temp file, fsync, rename); sealed when ``sealer``;
        ``state``: what of the database it holds (read back as :attr:`saved_state`)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with self._lock:
            parts = [faiss.serialize_index(self._index).tobytes()]
            if self._refine is not None:
                parts.append(faiss.serialize_index(self._refine).tobytes())
            st = state or SyncState(-1, -1, 0.0)
            head = _MAGIC + struct.pack("<IIQ", _FORMAT, len(parts), self.trained_on)
            head += struct.pack(_STATE, st.generation, st.top_row, st.created_at)
            data = head + b"".join(struct.pack("<Q", len(p)) + p for p in parts)
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
            return cls._parse(data, dim)
        except (RuntimeError, ValueError, struct.error):
            return cls(dim)

    @classmethod
    def _parse(cls, data: bytes, dim: int) -> VectorIndex:
        if not data.startswith(_MAGIC):  # an index file of the flat-only format
            index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
            if index.d == dim and isinstance(index, faiss.IndexIDMap2):
                return cls(dim, index)
            return cls(dim)
        fmt, n, trained_on = struct.unpack_from("<IIQ", data, len(_MAGIC))
        if fmt not in (1, _FORMAT) or n not in (1, 2):
            raise ValueError("unknown index file format")
        pos = len(_MAGIC) + struct.calcsize("<IIQ")
        state = None
        if fmt == _FORMAT:
            gen, top, created = struct.unpack_from(_STATE, data, pos)
            pos += struct.calcsize(_STATE)
            if gen >= 0:
                state = SyncState(int(gen), int(top), float(created))
        parts = []
        for _ in range(n):
            (size,) = struct.unpack_from("<Q", data, pos)
            pos += 8
            parts.append(faiss.deserialize_index(np.frombuffer(data[pos:pos + size], np.uint8)))
            pos += size
        if any(p.d != dim for p in parts):
            raise ValueError("index of another dimension")
        out = cls(dim, parts[0], parts[1] if n == 2 else None, int(trained_on))
        out.saved_state = state
        return out


@contextmanager
def _one_thread() -> Iterator[None]:
    """FAISS calls in this block run on the calling thread only (OpenMP's thread count is a
    setting of each thread: other threads keep theirs). Decoding one query's 1,024
    candidates is too little work to share: on two cores shared with other work, each
    parallel region waits for the second core to be free (measured on a busy machine: 1.6 ms
    on one thread, 8.6 ms on two; docs/benchmarks.md)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _chunks(ids: IntArray, size: int = 100_000) -> list[IntArray]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _slicer(ids: IntArray, vectors: FloatArray) -> Fetch:
    """``fetch`` over an in-memory (N, dim) array aligned with ``ids``."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]

    def fetch(want: IntArray) -> FloatArray:
        return np.asarray(vectors[order[np.searchsorted(sorted_ids, want)]], np.float32)

    return fetch
