"""Collections' vectors on Milvus (``FACESEARCH_VECTOR_BACKEND=milvus``).

Each facesearch collection has one Milvus collection, ``<prefix>_<collection row id>``, of
``(id INT64 primary key, vector FLOAT_VECTOR(128))`` rows whose ids are the store's face row
ids, indexed ``IVF_SQ8`` (inner product, :data:`NLIST` cells a segment, :data:`PROBE_FRACTION`
of them scanned, as the FAISS inverted file does: face vectors are nearly isotropic). Milvus
gives a shortlist (:func:`shortlist`); the store's own vectors score it exactly, so thresholds
and reported similarities are those of exact search, and :meth:`MilvusCollection.vectors`
reads the store too.

The metadata database stays the source of truth, as for the FAISS backend: each process
brings a collection up to date with it before using it (new faces are upserted; after a
deletion, or on first use in a process, the Milvus ids are reconciled with the database's face
rows), so a Milvus collection missing vectors, or holding stale ones, is mended from it.

Erasure deletes the rows, flushes, and compacts the collection (waiting for the compaction),
so that the erased vectors leave Milvus's segments; their old segment and index files go when
Milvus's garbage collector runs (``dataCoord.gc.interval``, ``dataCoord.gc.dropTolerance``),
and the inserts leave its message log (rocksmq, Pulsar or Kafka) when that log's retention
drops them: :class:`ServerSettings` are the server settings that bound both, and the bound
they give (docs/deploy.md; tested by searching every file of a server's data directory).

pymilvus 2.3 (the client of Milvus 2.3) pins old setuptools, protobuf, environs and
marshmallow, so it lives in its own environment (``scripts/setup-milvus``), not in the
service's default one.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from facesearch.errors import BackendError, UnavailableError
from facesearch.storage import database
from facesearch.storage.records import CollectionRow
from facesearch.storage.store import Store
from facesearch.storage.vector_types import Fetch, SyncStats
from facesearch.types import EMBEDDING_DIM, FloatArray, IntArray

log = logging.getLogger("facesearch.storage")

NLIST = 1024
"""IVF_SQ8 cells per Milvus segment."""
PROBE_FRACTION = 0.6
"""Share of a segment's cells scanned per query (as the FAISS inverted file)."""
INTERIM_NPROBE = 77
"""The server setting ``queryNode.segcore.interimIndex.nprobe`` a deployment needs: Milvus
searches segments not yet indexed (growing, or sealed before their IVF_SQ8 index is loaded)
on an interim index of 128 cells, of which it scans 16 by default, which finds only about
80 % of the matches; 77 scans :data:`PROBE_FRACTION` of them, as the IVF_SQ8 index does."""
CHUNK = 10_000
"""Rows per insert, delete or presence query."""
MAX_TOPK = 16_384
"""Milvus's largest top-k."""


@dataclass(frozen=True)
class ServerSettings:
    """Settings of a Milvus standalone server (rocksmq, its message log) that bound how long
    an erased vector stays in any of its files, and :attr:`erasure_bound_s`, that bound.

    How the server drops a vector's copies (Milvus 2.3.5, ``pkg/mq/mqimpl/rocksmq/server``):
    the segment copy goes at the erasure's compaction, its old segment and index files at the
    garbage collector's next run once ``gc_drop_s`` old; the message log stores each insert in
    a page (closed once it holds ``page_bytes``; a face's insert fills one by itself or with a
    few seconds of time ticks), marks a page acknowledged once every consumer of its channel
    read past it (at once while the server runs), checks each channel every ``ticker_s``
    (``rocksmq.timtickerInterval``; at most every tenth of the retention per channel) for
    pages acknowledged ``retention_min`` ago, deletes them from RocksDB (a range deletion:
    the bytes stay in its files), and compacts RocksDB every ``compaction_s``, which rewrites
    its files (and its write-ahead log's) without them. ``timtickerInterval`` defaults to
    600 s and is missing from the ``milvus`` wheel's configuration template, so
    ``--extra-config`` cannot set it: it goes into the server's ``milvus.yaml`` (the
    ``rocksmq`` section; ``tests/milvus_server.py`` writes it there)."""

    retention_min: float = 10
    """``rocksmq.retentionTimeInMinutes`` (Milvus's default: 3 days)."""
    ticker_s: int = 60
    """``rocksmq.timtickerInterval`` (default 600)."""
    compaction_s: int = 60
    """``rocksmq.compactionInterval`` (default 1 day)."""
    page_bytes: int = 4096
    """``rocksmq.rocksmqPageSize`` (default 64 MB: a small deployment's page never closes)."""
    gc_interval_s: int = 60
    """``dataCoord.gc.interval`` (default 1 hour)."""
    gc_drop_s: int = 60
    """``dataCoord.gc.dropTolerance`` (default 3 hours)."""
    slack_s: int = 60
    """Allowed for a page to close and be read, and for the compactions themselves."""

    def config(self) -> dict[str, int | float]:
        """The settings as Milvus configuration keys."""
        return {"rocksmq.retentionTimeInMinutes": self.retention_min,
                "rocksmq.timtickerInterval": self.ticker_s,
                "rocksmq.compactionInterval": self.compaction_s,
                "rocksmq.rocksmqPageSize": self.page_bytes,
                "dataCoord.gc.interval": self.gc_interval_s,
                "dataCoord.gc.dropTolerance": self.gc_drop_s}

    @property
    def erasure_bound_s(self) -> int:
        """Seconds after an erasure within which no file of the server holds the vectors:
        the message log's retention, two of its checks (a channel is checked at most every
        tenth of the retention), its compaction, and slack; or the garbage collector's."""
        retention = self.retention_min * 60
        log_s = retention + max(self.ticker_s, retention / 10) + self.ticker_s \
            + self.compaction_s
        gc_s = self.gc_drop_s + 2 * self.gc_interval_s
        return math.ceil(max(log_s, gc_s) + self.slack_s)


def shortlist(k: int) -> int:
    """Candidates asked of Milvus for top-``k``; the store's vectors score them exactly."""
    return min(MAX_TOPK, max(2 * k, 64))


def _client() -> Any:
    try:
        import pymilvus

        # pymilvus logs an error line for every failed call; facesearch reports outages once
        logging.getLogger("pymilvus.decorators").setLevel(logging.CRITICAL)
    except ImportError as exc:
        raise BackendError(
            "FACESEARCH_VECTOR_BACKEND=milvus needs pymilvus 2.3, which lives in its own "
            "environment: run the service from .venv-milvus (scripts/setup-milvus)") from exc
    return pymilvus


@dataclass
class MilvusCollection:
    """One facesearch collection's vectors in Milvus (:class:`CollectionVectors`)."""

    collection: Any
    """The pymilvus ``Collection``."""
    created: bool
    """Created by this process and not filled yet."""
    store: Store
    size: int = 0
    """Faces in the collection when last brought up to date."""
    generation: int = -1
    top_row: int = -1
    ts: int = 0
    """Milvus timestamp of this process's last write: searches see at least that."""
    timeout_s: int = 10
    """How long one Milvus call may take (then :class:`UnavailableError`)."""
    lock: threading.RLock = field(default_factory=threading.RLock)

    kind = "milvus"
    exact_vectors = True

    def __len__(self) -> int:
        return self.size

    def _read(self) -> dict[str, Any]:
        """Consistency of reads: everything this process wrote, without waiting for more."""
        if self.ts:
            return {"consistency_level": "Customized", "guarantee_timestamp": self.ts}
        return {"consistency_level": "Bounded"}

    def search(self, queries: FloatArray, k: int,
               exact: Fetch | None = None) -> tuple[FloatArray, IntArray]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != EMBEDDING_DIM:
            raise ValueError(f"expected (Q, {EMBEDDING_DIM}) queries, got {q.shape}")
        k = max(0, min(int(k), self.size))
        if k == 0 or not len(q):
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        params = {"metric_type": "IP", "params": {"nprobe": math.ceil(PROBE_FRACTION * NLIST)}}
        hits = []
        for start in range(0, len(q), 1000):
            hits.extend(_call("search", lambda s=start: self.collection.search(
                q[s:s + 1000], "vector", params, limit=shortlist(k), timeout=self.timeout_s,
                **self._read())))
        fetch = exact or self.vectors
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for i, found in enumerate(hits):
            ids = np.unique(np.asarray(found.ids, np.int64))
            if not len(ids):
                continue
            s = fetch(ids) @ q[i]
            order = np.argsort(-s, kind="stable")[:k]
            out_s[i, :len(order)] = s[order]
            out_i[i, :len(order)] = ids[order]
        return out_s, out_i

    def vectors(self, ids: npt.ArrayLike) -> FloatArray:
        """The store's vectors of ``ids`` (exact)."""
        rows = np.ascontiguousarray(ids, dtype=np.int64)
        with self.store.transaction() as conn:
            return self.store.faces.embeddings(conn, rows, EMBEDDING_DIM)

    # -- changes ---------------------------------------------------------------------------------

    def ids(self) -> IntArray:
        """Every id in the Milvus collection (as of now: strong consistency)."""
        it = _call("query", lambda: self.collection.query_iterator(
            batch_size=CHUNK, expr="id >= 0", output_fields=["id"], consistency_level="Strong",
            timeout=self.timeout_s))
        out: list[int] = []
        try:
            while batch := _call("query", it.next):
                out.extend(int(r["id"]) for r in batch)
        finally:
            it.close()
        return np.unique(np.asarray(out, np.int64))

    def count(self) -> int:
        """Rows in the Milvus collection (as of now: strong consistency)."""
        res = _call("query", lambda: self.collection.query(
            expr="", output_fields=["count(*)"], consistency_level="Strong",
            timeout=self.timeout_s))
        return int(res[0]["count(*)"])

    def upsert(self, ids: IntArray, fetch: Fetch) -> None:
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            vecs = np.ascontiguousarray(fetch(chunk), np.float32)
            res = _call("upsert", lambda c=chunk, v=vecs: self.collection.upsert(
                [c.tolist(), v], timeout=self.timeout_s))
            self.ts = max(self.ts, int(res.timestamp))

    def delete(self, ids: IntArray) -> None:
        for start in range(0, len(ids), CHUNK):
            chunk = ",".join(str(int(i)) for i in ids[start:start + CHUNK])
            _call("delete", lambda c=chunk: self.collection.delete(f"id in [{c}]",
                                                                   timeout=self.timeout_s))
        if len(ids):
            self.see_now()  # Milvus 2.3 reports no timestamp for deletes

    def see_now(self) -> None:
        """Let later reads see every write made until now (by any process)."""
        self.ts = max(self.ts, _client().utility.mkts_from_unixtime(time.time()))

    def purge(self, timeout_s: int) -> None:
        """Flush, then compact the collection and wait (up to ``timeout_s`` each): deleted
        rows leave its segments."""
        _call("flush", lambda: self.collection.flush(timeout=timeout_s))
        _call("compact", lambda: self.collection.compact(timeout=timeout_s))
        _call("compact", lambda: self.collection.wait_for_compaction_completed(timeout_s))


class MilvusVectors:
    """The vectors of one data directory's collections on a Milvus server or cluster
    (:class:`facesearch.storage.vectors.VectorBackend`; thread-safe, a lock per collection).

    ``uri``: ``http://host:19530`` (a standalone server or a cluster's proxy); ``prefix``
    names this deployment's Milvus collections (one prefix per facesearch database);
    ``token``: ``user:password`` or an API key when Milvus has authentication on;
    ``timeout_s``: how long one Milvus call may take (then :class:`UnavailableError`: a
    server that is down is answered within that, never waited for); ``slow_timeout_s``:
    how long loading a collection, and an erasure's flush and compaction, may take;
    ``erasure_bound_s``: the bound the server's settings give (:class:`ServerSettings`),
    stated on erasure receipts. Nothing connects to Milvus until a
    collection's vectors are needed (commands that use none never wait for it); a lost
    connection is retried by the next call.

    Milvus is shared by every node, so its position in each collection's changes is kept in
    the shared database (``vector_sync``): a node that finds Milvus behind the database
    applies the rest (faces added after that position's top row, rows the change log says
    were deleted since its generation) under the collection's database lock, then moves the
    position on. Each change is written to Milvus once, by one node; a node that restarts
    reads nothing but the position.
    """

    def __init__(self, store: Store, uri: str, *, prefix: str = "facesearch",
                 token: str | None = None, timeout_s: int = 5,
                 slow_timeout_s: int = 120,
                 erasure_bound_s: int = ServerSettings().erasure_bound_s) -> None:
        self.store = store
        self.erasure_bound_s = int(erasure_bound_s)
        self.uri = uri
        self.prefix = prefix
        self.timeout_s = int(timeout_s)  # pymilvus bounds its retries only by an int timeout
        self.slow_timeout_s = int(slow_timeout_s)
        self._token = token or ""
        self._connected = False
        self.stats = SyncStats()
        self._registry = threading.Lock()
        self._locks: dict[int, threading.RLock] = {}
        self._entries: dict[int, MilvusCollection] = {}
        self._pm = _client()
        self.alias = f"facesearch-{id(self):x}"

    def _connect(self) -> None:
        """Connect on first need (and again after a failed try)."""
        with self._registry:
            if self._connected:
                return
            _call("connect", lambda: self._pm.connections.connect(
                alias=self.alias, uri=self.uri, token=self._token, timeout=self.timeout_s))
            self._connected = True

    @property
    def erasure_bound(self) -> str:
        """Milvus keeps copies of erased vectors in its files for as long as its settings
        say; this service cannot read them, the deployment states the bound."""
        return (f"Milvus: the erased vectors left its segments at once (compaction); its old "
                f"segment and index files and its message log hold them for at most "
                f"{self.erasure_bound_s} s more, with the server settings of docs/deploy.md "
                f"(FACESEARCH_MILVUS_ERASURE_BOUND_S)")

    def check(self) -> None:
        """The server answers (within :attr:`timeout_s`)."""
        self._connect()
        _call("get_server_version", lambda: self._pm.utility.get_server_version(
            using=self.alias, timeout=self.timeout_s))

    @property
    def backend(self) -> str:
        """This deployment's name in ``vector_sync``."""
        return f"milvus:{self.prefix}"

    def name(self, collection_id: int) -> str:
        return f"{self.prefix}_{collection_id}"

    @staticmethod
    def description(coll: CollectionRow) -> str:
        """What ties a Milvus collection to its facesearch collection."""
        return f"facesearch collection {coll.name!r} created at {coll.created_at!r}"

    def locked(self, collection_id: int) -> threading.RLock:
        with self._registry:
            lock = self._locks.get(collection_id)
            if lock is None:
                lock = self._locks[collection_id] = threading.RLock()
            return lock

    def get(self, coll: CollectionRow) -> MilvusCollection:
        with self.locked(coll.id):
            entry = self._entries.get(coll.id)
            if entry is None:
                entry = MilvusCollection(*self._open(coll), store=self.store,
                                         timeout_s=self.timeout_s)
                self._entries[coll.id] = entry
            self._catch_up(coll, entry)
            return entry

    def _open(self, coll: CollectionRow) -> tuple[Any, bool]:
        """The pymilvus collection, and whether it was created now (then it is filled from
        the database in full, whatever the shared position says)."""
        self._connect()
        pm = self._pm
        name = self.name(coll.id)
        want = self.description(coll)
        t = self.timeout_s
        if _call("has_collection", lambda: pm.utility.has_collection(name, using=self.alias,
                                                                       timeout=t)):
            c = pm.Collection(name, using=self.alias)
            if c.description != want:
                raise BackendError(
                    f"the Milvus collection {name} belongs to another facesearch database "
                    f"({c.description!r}); give this deployment its own FACESEARCH_MILVUS_PREFIX")
            created = False
        else:
            created = True
            schema = pm.CollectionSchema([
                pm.FieldSchema("id", pm.DataType.INT64, is_primary=True),
                pm.FieldSchema("vector", pm.DataType.FLOAT_VECTOR, dim=EMBEDDING_DIM)],
                description=want)
            c = _call("create_collection", lambda: pm.Collection(
                name, schema, using=self.alias, consistency_level="Bounded", timeout=t))
            _call("create_index", lambda: c.create_index("vector", {
                "index_type": "IVF_SQ8", "metric_type": "IP", "params": {"nlist": NLIST}},
                timeout=t))
        _call("load", lambda: c.load(timeout=self.slow_timeout_s))
        return c, created

    def _catch_up(self, coll: CollectionRow, entry: MilvusCollection) -> None:
        with self.store.snapshot() as conn:
            state = self.store.generations.index_state(conn, coll.id)
            if state == (entry.generation, entry.top_row):
                return
        key = database.lock_key(f"vectors:{self.backend}:{coll.id}")
        with database.exclusive(self.store.engine, key) as conn:  # one node at a time
            gen, top = self.store.generations.index_state(conn, coll.id)
            pos = self.store.generations.sync_position(conn, self.backend, coll.id)

            def fetch(ids: IntArray) -> FloatArray:
                return self.store.faces.embeddings(conn, ids, EMBEDDING_DIM)

            deleted = None
            if pos is not None and not entry.created:
                deleted = (np.zeros(0, np.int64) if pos[0] == gen else
                           self.store.generations.vector_changes(conn, coll.id, pos[0], gen))
            if deleted is not None and pos is not None and (pos[0], pos[1]) != (gen, top):
                new = self.store.faces.rows_after(conn, coll.id, pos[1])
                entry.delete(deleted)
                entry.upsert(new, fetch)
                self.stats.incremental += 1
                self.stats.rows += len(deleted) + len(new)
            size = self.store.generations.face_count(conn, coll)
            if deleted is not None and entry.generation == -1:
                entry.ts = 0  # first use in this process: does Milvus hold as many rows?
                if entry.count() != size:
                    log.warning("Milvus collection %s holds %d vectors, the database %d "
                                "faces: reconciling", self.name(coll.id), entry.count(), size)
                    deleted = None
            if deleted is None:
                truth = self.store.faces.all_rows(conn, coll.id)
                have = entry.ids()
                extra = np.setdiff1d(have, truth, assume_unique=True)
                missing = np.setdiff1d(truth, have, assume_unique=True)
                entry.delete(extra)
                entry.upsert(missing, fetch)
                self.stats.full += 1
                self.stats.rows += len(truth)
                if len(extra) or len(missing):
                    log.info("Milvus collection %s reconciled with the database: %d added, "
                             "%d removed", self.name(coll.id), len(missing), len(extra))
            self.store.generations.set_sync_position(conn, self.backend, coll.id, gen, top)
            entry.size = size
        entry.see_now()  # what any node wrote is visible from here on
        entry.generation, entry.top_row, entry.created = gen, top, False

    def remove(self, coll: CollectionRow, rows: IntArray, generation_before: int) -> None:
        """The erasure's generation is in the change log: catching up deletes the rows (once,
        for every node); they are deleted again here in case the log could not tell, then
        the collection is flushed and compacted."""
        rows_ = np.asarray(rows, np.int64)
        with self.locked(coll.id):
            entry = self.get(coll)
            entry.delete(rows_)
            entry.purge(self.slow_timeout_s)

    def drop(self, collection_id: int) -> None:
        with self.locked(collection_id):
            self._entries.pop(collection_id, None)
            self._connect()
            name = self.name(collection_id)
            pm = self._pm
            t = self.timeout_s
            if _call("has_collection", lambda: pm.utility.has_collection(
                    name, using=self.alias, timeout=t)):
                _call("drop_collection", lambda: pm.utility.drop_collection(
                    name, using=self.alias, timeout=t))

    def flush(self) -> None:
        """Nothing to do: Milvus persists each write (its log, then sealed segments)."""

    def shutdown(self) -> None:
        with self._registry:
            self._entries.clear()
            if self._connected:
                self._pm.connections.disconnect(self.alias)
                self._connected = False


_UNAVAILABLE_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")


def _call(what: str, fn: Any) -> Any:
    """``fn()``, with Milvus's errors as :class:`UnavailableError` when the server does not
    answer (connection refused or lost, a call past its timeout) and :class:`BackendError`
    otherwise."""
    import grpc
    from pymilvus.exceptions import ConnectError, MilvusException, MilvusUnavailableException

    try:
        return fn()
    except (ConnectError, MilvusUnavailableException) as exc:
        raise _unavailable(what, exc.message) from None
    except MilvusException as exc:
        code = str(getattr(exc, "code", ""))
        if any(c in code for c in _UNAVAILABLE_CODES) or "Retry timeout" in exc.message \
                or "Fail connecting to server" in exc.message:
            raise _unavailable(what, exc.message) from None
        raise BackendError(f"Milvus {what} failed: {exc.message}") from exc
    except grpc.RpcError as exc:  # past its deadline (not retried by pymilvus)
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        raise _unavailable(what, str(detail)) from None
    except grpc.FutureTimeoutError:
        raise _unavailable(what, "timed out") from None


def _unavailable(what: str, detail: str) -> UnavailableError:
    first = (detail.strip().splitlines() or [""])[0][:200]
    return UnavailableError(f"the Milvus server does not answer ({what}: {first}); retry",
                            "milvus")
