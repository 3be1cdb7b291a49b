"""The vector-backend contract: what the search gate, users, erasure and indexing ask of the
vectors of each collection, and the backend the settings select.

Two backends implement it, both caches of the metadata database (the source of truth: vectors
are stored sealed in its ``faces`` table, and a backend missing vectors is reconciled from it).
Both catch up with the database incrementally: faces added after the highest row applied, and
the rows the vector change log says were deleted since the generation applied
(:meth:`facesearch.storage.generations.Generations.vector_changes`):

- ``faiss`` (default): :class:`facesearch.storage.indexes.IndexCache`, a FAISS index per
  collection in the data directory (exact, then an inverted file);
- ``milvus``: :class:`facesearch.storage.milvus.MilvusVectors`, a Milvus collection per
  facesearch collection on a Milvus server or cluster (``FACESEARCH_MILVUS_URI``); it needs
  pymilvus 2.3, installed apart (``scripts/setup-milvus``: docs/deploy.md).

Ids are the store's face row ids (int64); scores are cosines in [-1, 1]. Every backend's
search reports exact cosines when given ``exact`` (the store's vectors), so thresholds and
reported similarities do not depend on the backend.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy.typing as npt

from facesearch.storage.crypto import Sealer
from facesearch.storage.records import CollectionRow
from facesearch.storage.store import Store
from facesearch.storage.vector_types import Fetch, SyncStats
from facesearch.types import FloatArray, IntArray

if TYPE_CHECKING:
    from facesearch.config import Settings

class CollectionVectors(Protocol):
    """One collection's vectors, as searches see them."""

    @property
    def kind(self) -> str:
        """The form of the index (``flat``, ``ivf``, ``milvus``), for logs and tools."""

    @property
    def exact_vectors(self) -> bool:
        """Whether :meth:`vectors` gives the stored vectors exactly (else close copies)."""

    def __len__(self) -> int: ...

    def search(self, queries: FloatArray, k: int,
               exact: Fetch | None = None) -> tuple[FloatArray, IntArray]:
        """Top-``k`` cosines and ids for each query ((Q, D) -> (Q, k), (Q, k)); id -1 pads.
        ``exact(ids)`` gives the stored vectors that score the final shortlist."""

    def vectors(self, ids: npt.ArrayLike) -> FloatArray:
        """The vectors of ``ids`` (each must be present), (N, D)."""


class VectorBackend(Protocol):
    """The vectors of one data directory's collections, kept in step with the database."""

    def locked(self, collection_id: int) -> threading.RLock:
        """The collection's lock, held by writers that must not interleave with its vectors'
        updates (erasure, deletion, re-embedding); other collections stay free."""

    stats: SyncStats

    @property
    def erasure_bound(self) -> str:
        """Where copies of erased vectors outlive an erasure, and for how long (stated on
        the erasure receipt); empty when none does."""

    def get(self, coll: CollectionRow) -> CollectionVectors:
        """The collection's vectors, brought up to date with the database."""

    def remove(self, coll: CollectionRow, rows: IntArray, generation_before: int) -> None:
        """Take erased ``rows`` out at once, leaving no copy of their vectors in the backend's
        storage. ``generation_before``: the collection's generation just before the erasure."""

    def drop(self, collection_id: int) -> None:
        """Forget a collection's vectors (collection deleted, or its vectors replaced: the
        next :meth:`get` builds them anew from the database)."""

    def flush(self) -> None:
        """Persist what changed."""

    def check(self) -> None:
        """Raise :class:`~facesearch.errors.UnavailableError` (within seconds) when the
        backend does not answer (readiness)."""

    def shutdown(self) -> None: ...


def vector_backend(settings: Settings, home: Path, store: Store,
                   sealer: Sealer | None) -> VectorBackend:
    """The backend ``settings.vector_backend`` names."""
    if settings.vector_backend == "milvus":
        from facesearch.storage.milvus import MilvusVectors

        token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
        return MilvusVectors(store, settings.milvus_uri, prefix=settings.milvus_prefix,
                             token=token, erasure_bound_s=settings.milvus_erasure_bound_s)
    from facesearch.storage.indexes import IndexCache

    return IndexCache(home, store, sealer, large=settings.index_large)
