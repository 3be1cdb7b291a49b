"""Each collection's vector index, kept in step with the metadata database.

``facesearch.db`` (or the shared PostgreSQL database) is the source of truth;
``<home>/indexes/<collection id>.faiss`` is this node's cache of each collection's vectors,
with the state of the database it holds (:class:`~facesearch.storage.index.SyncState`).
:meth:`IndexCache.get` brings a collection's index up to date whenever the database changed
(also from another process or node), reading only what changed since: faces added after the
highest row it holds, and the rows deleted in the generations since its own, from the
vector change log (:meth:`facesearch.storage.generations.Generations.vector_changes`). Only
when the log cannot tell (it was pruned, or every vector was replaced) is the index reconciled
with, or rebuilt from, every face row. So a node that restarts reads what changed while it was down,
not the collection. Changed indexes are written every :attr:`IndexCache.SAVE_EVERY` changes,
on :meth:`IndexCache.flush` and at shutdown.

Each collection has its own lock: catching one collection up never holds up searches of
another.

An index changes form with the collection's size (exact, then an inverted file:
:mod:`facesearch.storage.index`): when it no longer suits its size, a background thread
builds the new form from the database, a chunk at a time, while searches keep using the old
one; the new index is then brought up to date with what changed meanwhile and swapped in.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facesearch.storage.crypto import Sealer
from facesearch.storage.index import LARGE, SyncState, VectorIndex
from facesearch.storage.records import CollectionRow
from facesearch.storage.store import Store
from facesearch.storage.vector_types import SyncStats
from facesearch.types import EMBEDDING_DIM, IntArray

log = logging.getLogger("facesearch.storage")


@dataclass
class _Entry:
    index: VectorIndex
    generation: int = -1
    top_row: int = -1
    unsaved: int = 0
    created_at: float = 0.0
    """The collection's creation time (ties the saved file to it)."""


@dataclass
class _Slot:
    """One collection's lock and index (None until first used)."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    entry: _Entry | None = None


class IndexCache:
    """The vector indexes of one data directory's collections (thread-safe, a lock per
    collection).

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
        self.stats = SyncStats()
        self._slots: dict[int, _Slot] = {}
        self._building: dict[int, threading.Thread] = {}
        self._closed = False
        self._registry = threading.Lock()

    def path(self, collection_id: int) -> Path:
        return self.home / "indexes" / f"{collection_id}.faiss"

    def locked(self, collection_id: int) -> threading.RLock:
        """The collection's lock: held by writers that must not interleave with its index's
        updates (erasure, deletion, re-embedding); other collections stay free."""
        with self._registry:
            slot = self._slots.get(collection_id)
            if slot is None:
                slot = self._slots[collection_id] = _Slot()
            return slot.lock

    def _slot(self, collection_id: int) -> _Slot:
        self.locked(collection_id)
        return self._slots[collection_id]

    def get(self, coll: CollectionRow) -> VectorIndex:
        """The collection's vector index, brought up to date with the database (and a
        rebuild in the form its size calls for started, when it no longer suits it)."""
        slot = self._slot(coll.id)
        with slot.lock:
            if slot.entry is None:
                index = VectorIndex.load(self.path(coll.id), EMBEDDING_DIM, self.sealer)
                entry = _Entry(index, created_at=coll.created_at)
                st = index.saved_state
                if st is not None and st.created_at == coll.created_at:
                    entry.generation, entry.top_row = st.generation, st.top_row
                slot.entry = entry
            entry = slot.entry
            self._catch_up(coll, entry)
            if entry.unsaved >= self.SAVE_EVERY:
                self._save(coll, entry)
            with self._registry:
                building = coll.id in self._building
            if entry.index.needs_rebuild(self.large) and not building:
                self._start_rebuild(coll)
            assert slot.entry is not None
            return slot.entry.index

    def _catch_up(self, coll: CollectionRow, entry: _Entry) -> None:
        """Apply what changed in the database since the entry's state (one snapshot)."""
        with self.store.snapshot() as conn:
            gen, top = self.store.generations.index_state(conn, coll.id)
            if gen == entry.generation and top <= entry.top_row:
                return
            deleted = (self.store.generations.vector_changes(conn, coll.id, entry.generation, gen)
                       if gen != entry.generation else np.zeros(0, np.int64))
            if deleted is None:
                truth = self.store.faces.all_rows(conn, coll.id)
                self.stats.full += 1
                self.stats.rows += len(truth)

                def fetch(ids: IntArray) -> np.ndarray:
                    return self.store.faces.embeddings(conn, ids, EMBEDDING_DIM)

                if self.store.generations.vectors_replaced(conn, coll.id, entry.generation, gen):
                    # re-embedded: the same ids with new vectors
                    entry.index = VectorIndex.build(EMBEDDING_DIM, truth, fetch,
                                                    large=self.large)
                    entry.unsaved += len(truth)
                else:
                    added, removed = entry.index.reconcile(truth, fetch)
                    entry.unsaved += added + removed
            else:
                new = self.store.faces.rows_after(conn, coll.id, max(entry.top_row, 0))
                self.stats.incremental += 1
                self.stats.rows += len(deleted) + len(new)
                removed = entry.index.remove(deleted)
                entry.index.add(new, self.store.faces.embeddings(conn, new, EMBEDDING_DIM))
                entry.unsaved += removed + len(new)
        entry.generation, entry.top_row = gen, top

    # -- rebuilds ----------------------------------------------------------------------------

    def _start_rebuild(self, coll: CollectionRow) -> None:
        if not self.background:
            self.rebuild(coll)
            return
        t = threading.Thread(target=self._rebuild_logged, args=(coll,),
                             name=f"facesearch-index-{coll.id}", daemon=True)
        with self._registry:
            self._building[coll.id] = t
        t.start()

    def _rebuild_logged(self, coll: CollectionRow) -> None:
        try:
            self.rebuild(coll)
        except Exception:  # a background thread must report, not vanish; the old index stays
            log.exception("rebuilding the vector index of collection %s failed", coll.name)
        finally:
            with self._registry:
                self._building.pop(coll.id, None)

    def rebuild(self, coll: CollectionRow) -> VectorIndex:
        """Build the collection's index anew, in the form its size calls for, from the
        database (a chunk of vectors at a time), then swap it in up to date."""
        with self.store.snapshot() as conn:
            gen, top = self.store.generations.index_state(conn, coll.id)
            ids = self.store.faces.all_rows(conn, coll.id)

        def fetch(rows: IntArray) -> np.ndarray:
            with self.store.transaction() as conn:
                return self.store.faces.embeddings(conn, rows, EMBEDDING_DIM)

        fresh = VectorIndex.build(EMBEDDING_DIM, ids, fetch, large=self.large)
        slot = self._slot(coll.id)
        with slot.lock:  # (a collection is deleted under this lock)
            if self._closed:
                return fresh
            if slot.entry is None:  # not opened yet, or deleted meanwhile
                with self.store.transaction() as conn:
                    now = self.store.collections.find(conn, coll.name)
                if now is None or now.id != coll.id:
                    return fresh
            entry = _Entry(fresh, gen, top, created_at=coll.created_at)
            self._catch_up(coll, entry)  # what changed while it was built
            slot.entry = entry
            self._save(coll, entry)
        log.info("vector index of collection %s rebuilt: %s, %d vectors", coll.name,
                 fresh.kind, len(fresh))
        return fresh

    def wait_rebuilds(self, timeout_s: float | None = None) -> None:
        """Wait for rebuilds in progress (tests, tools, shutdown)."""
        with self._registry:
            threads = list(self._building.values())
        for t in threads:
            t.join(timeout_s)

    # -- changes -----------------------------------------------------------------------------

    def remove(self, coll: CollectionRow, rows: IntArray, generation_before: int) -> None:
        """Take erased ``rows`` out of the collection's index at once and write it (the old
        file still held their vectors). The erasure's generation is in the change log, so
        the catch-up removes them (``generation_before`` is kept for the backends' contract);
        they are removed again here in case the log could not tell."""
        slot = self._slot(coll.id)
        with slot.lock:
            self.get(coll)
            assert slot.entry is not None
            slot.entry.index.remove(np.asarray(rows, np.int64))
            self._save(coll, slot.entry)

    def drop(self, collection_id: int) -> None:
        """Forget a collection's index and delete its file (collection deleted, or its vectors
        replaced: the next :meth:`get` rebuilds it from the database)."""
        slot = self._slot(collection_id)
        with slot.lock:
            slot.entry = None
            self.path(collection_id).unlink(missing_ok=True)

    def _save(self, coll: CollectionRow, entry: _Entry) -> None:
        entry.index.save(self.path(coll.id), self.sealer,
                         SyncState(entry.generation, entry.top_row, coll.created_at))
        entry.created_at = coll.created_at
        entry.unsaved = 0

    def flush(self) -> None:
        """Write every changed index to disk."""
        with self._registry:
            slots = list(self._slots.items())
        for cid, slot in slots:
            with slot.lock:
                entry = slot.entry
                if entry is not None and entry.unsaved:
                    entry.index.save(self.path(cid), self.sealer, SyncState(
                        entry.generation, entry.top_row, entry.created_at))
                    entry.unsaved = 0

    def check(self) -> None:
        """Nothing to check: the indexes are in this process."""

    @property
    def erasure_bound(self) -> str:
        """None outlives it: the index file is rewritten without the erased vectors."""
        return ""

    def shutdown(self) -> None:
        self._closed = True
        self.wait_rebuilds(timeout_s=60)
        self.flush()
