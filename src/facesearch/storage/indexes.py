"""Each collection's vector index, kept in step with the metadata database.

``facesearch.db`` is the source of truth; ``<home>/indexes/<collection id>.faiss`` is a cache
of each collection's vectors. :meth:`IndexCache.get` brings a collection's index up to date
whenever the database changed (also from another process): new faces are added, and after a
deletion (the collection's generation changed) the index is reconciled with the database's
face rows. Changed indexes are written every :attr:`IndexCache.SAVE_EVERY` changes, on
:meth:`IndexCache.flush` and at shutdown.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from facesearch.storage.crypto import Sealer
from facesearch.storage.index import VectorIndex
from facesearch.storage.store import CollectionRow, Store
from facesearch.types import EMBEDDING_DIM


@dataclass
class _Entry:
    index: VectorIndex
    generation: int = -1
    top_row: int = -1
    unsaved: int = 0


class IndexCache:
    """The vector indexes of one data directory's collections (thread-safe)."""

    SAVE_EVERY = 20_000
    """Changes (faces added or removed) after which an index is written to disk."""

    def __init__(self, home: Path, store: Store, sealer: Sealer | None = None) -> None:
        self.home = home
        self.store = store
        self.sealer = sealer
        self._entries: dict[int, _Entry] = {}
        self.lock = threading.RLock()
        """Held by writers that must not interleave with an index update (erasure)."""

    def path(self, collection_id: int) -> Path:
        return self.home / "indexes" / f"{collection_id}.faiss"

    def get(self, coll: CollectionRow) -> VectorIndex:
        """The collection's vector index, brought up to date with the database."""
        with self.lock:
            entry = self._entries.get(coll.id)
            if entry is None:
                entry = _Entry(VectorIndex.load(self.path(coll.id), EMBEDDING_DIM, self.sealer))
                self._entries[coll.id] = entry
            with self.store.transaction() as conn:
                gen, top = self.store.index_state(conn, coll.id)
                if gen != entry.generation:
                    truth = self.store.all_face_rows(conn, coll.id)
                    added, removed = entry.index.reconcile(
                        truth, lambda ids: self.store.embeddings(conn, ids, EMBEDDING_DIM))
                    entry.unsaved += added + removed
                elif top > entry.top_row:
                    new = self.store.face_rows_after(conn, coll.id, entry.top_row)
                    entry.index.add(new, self.store.embeddings(conn, new, EMBEDDING_DIM))
                    entry.unsaved += len(new)
            entry.generation, entry.top_row = gen, top
            if entry.unsaved >= self.SAVE_EVERY:
                self._save(coll.id, entry)
            return entry.index

    def rewrite(self, coll: CollectionRow) -> None:
        """Bring the index up to date and write it now (after an erasure: the old file still
        held the erased vectors)."""
        with self.lock:
            self.get(coll)
            self._save(coll.id, self._entries[coll.id])

    def drop(self, collection_id: int) -> None:
        """Forget a collection's index and delete its file (collection deleted, or its vectors
        replaced: the next :meth:`get` rebuilds it from the database)."""
        with self.lock:
            self._entries.pop(collection_id, None)
            self.path(collection_id).unlink(missing_ok=True)

    def _save(self, collection_id: int, entry: _Entry) -> None:
        entry.index.save(self.path(collection_id), self.sealer)
        entry.unsaved = 0

    def flush(self) -> None:
        """Write every changed index to disk."""
        with self.lock:
            for cid, entry in self._entries.items():
                if entry.unsaved:
                    self._save(cid, entry)

    def shutdown(self) -> None:
        self.flush()
