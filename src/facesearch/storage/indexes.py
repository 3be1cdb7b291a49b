"""Each collection's vector index, kept in step with the metadata database.

``facesearch.db`` is the source of truth; ``<home>/indexes/<collection id>.faiss`` is a cache
of each collection's vectors. :meth:`IndexCache.get` brings a collection's index up to date
whenever the database changed (also from another process): new faces are added, and after a
deletion (the collection's generation changed) the index is reconciled with the database's
face rows. Changed indexes are written every :attr:`IndexCache.SAVE_EVERY` changes, on
:meth:`IndexCache.flush` and at shutdown.

An index changes form with the collection's size (exact, then an inverted file:
:mod:`facesearch.storage.index`): when it no longer suits its size, a background thread
builds the new form from the database, a chunk at a time, while searches keep using the old
one; the new index is then brought up to date with what changed meanwhile and swapped in.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesearch.storage.crypto import Sealer
from facesearch.storage.index import LARGE, VectorIndex
from facesearch.storage.store import CollectionRow, Store
from facesearch.types import EMBEDDING_DIM, IntArray

log = logging.getLogger("facesearch.storage")


@dataclass
class _Entry:
    index: VectorIndex
    generation: int = -1
    top_row: int = -1
    unsaved: int = 0


class IndexCache:
    """The vector indexes of one data directory's collections (thread-safe).

    ``large``: the collection size from which an index is an inverted file (default
    :data:`~facesearch.storage.index.LARGE`); ``background``: rebuild in a thread (the
    default) or at once, in the caller (tests, tools).
    """

    SAVE_EVERY = 20_000
    """Changes (faces added or removed) after which an index is written to disk."""

    def __init__(self, home: Path, store: Store, sealer: Sealer | None = None, *,
                 large: int = LARGE, background: bool = True) -> None:
        self.home = home
        self.store = store
        self.sealer = sealer
        self.large = large
        self.background = background
        self._entries: dict[int, _Entry] = {}
        self._building: dict[int, threading.Thread] = {}
        self._closed = False
        self.lock = threading.RLock()
        """Held by writers that must not interleave with an index update (erasure)."""

    def path(self, collection_id: int) -> Path:
        return self.home / "indexes" / f"{collection_id}.faiss"

    def get(self, coll: CollectionRow) -> VectorIndex:
        """The collection's vector index, brought up to date with the database (and a
        rebuild in the form its size calls for started, when it no longer suits it)."""
        with self.lock:
            entry = self._entries.get(coll.id)
            if entry is None:
                entry = _Entry(VectorIndex.load(self.path(coll.id), EMBEDDING_DIM, self.sealer))
                self._entries[coll.id] = entry
            self._catch_up(coll, entry)
            if entry.unsaved >= self.SAVE_EVERY:
                self._save(coll.id, entry)
            if entry.index.needs_rebuild(self.large) and coll.id not in self._building:
                self._start_rebuild(coll)
            return self._entries[coll.id].index

    def _catch_up(self, coll: CollectionRow, entry: _Entry) -> None:
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

    # -- rebuilds ----------------------------------------------------------------------------

    def _start_rebuild(self, coll: CollectionRow) -> None:
        if not self.background:
            self.rebuild(coll)
            return
        t = threading.Thread(target=self._rebuild_logged, args=(coll,),
                             name=f"facesearch-index-{coll.id}", daemon=True)
        self._building[coll.id] = t
        t.start()

    def _rebuild_logged(self, coll: CollectionRow) -> None:
        try:
            self.rebuild(coll)
        except Exception:  # a background thread must report, not vanish; the old index stays
            log.exception("rebuilding the vector index of collection %s failed", coll.name)
        finally:
            with self.lock:
                self._building.pop(coll.id, None)

    def rebuild(self, coll: CollectionRow) -> VectorIndex:
        """Build the collection's index anew, in the form its size calls for, from the
        database (a chunk of vectors at a time), then swap it in up to date."""
        with self.store.transaction() as conn:
            ids = self.store.all_face_rows(conn, coll.id)

        def fetch(rows: IntArray) -> np.ndarray:
            with self.store.transaction() as conn:
                return self.store.embeddings(conn, rows, EMBEDDING_DIM)

        fresh = VectorIndex.build(EMBEDDING_DIM, ids, fetch, large=self.large)
        with self.lock:  # (a collection is deleted under this lock)
            if self._closed:
                return fresh
            if coll.id not in self._entries:  # not opened yet, or deleted meanwhile
                with self.store.transaction() as conn:
                    now = self.store.get_collection(conn, coll.name)
                if now is None or now.id != coll.id:
                    return fresh
            entry = _Entry(fresh)
            self._catch_up(coll, entry)  # what changed while it was built
            self._entries[coll.id] = entry
            self._save(coll.id, entry)
        log.info("vector index of collection %s rebuilt: %s, %d vectors", coll.name,
                 fresh.kind, len(fresh))
        return fresh

    def wait_rebuilds(self, timeout_s: float | None = None) -> None:
        """Wait for rebuilds in progress (tests, tools, shutdown)."""
        with self.lock:
            threads = list(self._building.values())
        for t in threads:
            t.join(timeout_s)

    # -- changes -----------------------------------------------------------------------------

    def remove(self, coll: CollectionRow, rows: IntArray, generation_before: int) -> None:
        """Take erased ``rows`` out of the collection's index at once and write it (the old
        file still held their vectors). ``generation_before``: the collection's generation
        just before the erasure; an index that was not up to date then is reconciled with
        the database instead."""
        with self.lock:
            entry = self._entries.get(coll.id)
            if entry is None or entry.generation != generation_before:
                self.rewrite(coll)
                return
            entry.index.remove(np.asarray(rows, np.int64))
            with self.store.transaction() as conn:
                entry.generation = self.store.index_state(conn, coll.id)[0]
            self._catch_up(coll, entry)  # faces another writer added meanwhile
            self._save(coll.id, entry)

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
        with self.lock:
            self._closed = True
        self.wait_rebuilds(timeout_s=60)
        self.flush()
