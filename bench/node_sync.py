"""Two API nodes on one PostgreSQL: how long a delete on one takes to leave the other's
searches, and how long a node takes to restart, at N faces.

A PostgreSQL server of its own (``tests/postgres.py``: initdb in a temporary folder), N faces
with synthetic vectors written through the store (``bench/search_latency.py``'s ``fill``),
both nodes' indexes built as the service builds them. Then: node A deletes a face; node B's next
search (which applies the vector change log) is timed, and it must not return the face;
node B stops (writing its index file), A adds and deletes a few faces, and B's open and first
search are timed (it reads only what changed).

    .venv/bin/python bench/node_sync.py [--faces 1000000]
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=1_000_000)
    args = ap.parse_args()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from search_latency import fill

    from facesearch.config import Settings
    from facesearch.service import FaceSearch
    from tests.postgres import PostgresServer, binaries
    from tests.services.test_nodes import _fill

    bindir = binaries()
    if bindir is None:
        print("PostgreSQL is not installed")
        return 1
    server = PostgresServer.start(bindir)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            secrets = Path(tmp) / "secrets"
            secrets.mkdir()
            (secrets / "a.pem").write_bytes(Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
            (secrets / "m.key").write_text(base64.b64encode(os.urandom(32)).decode())
            url = server.url(server.create_database())
            common = {"database_url": url, "audit_database_url": url,
                      "audit_signing_key": secrets / "a.pem",
                      "keys_master_key_file": secrets / "m.key"}

            def node(name: str) -> FaceSearch:
                return FaceSearch(Settings(home=Path(tmp) / name, **common))  # type: ignore[arg-type]

            a, b = node("a"), node("b")
            a.collections.create("big")
            t = time.perf_counter()
            fill(a, "big", args.faces)
            print(f"filled {args.faces:,} faces in {time.perf_counter() - t:.0f} s", flush=True)
            with b.store.transaction() as conn:
                coll = b.store.collections.get(conn, "big")
                rows = b.store.faces.all_rows(conn, coll.id)
                probe = b.store.faces.embeddings(conn, rows[:1], 128)
            for name, fs in (("A", a), ("B", b)):
                t = time.perf_counter()
                fs.indexes.rebuild(coll)
                print(f"node {name} built its index in {time.perf_counter() - t:.0f} s",
                      flush=True)

            def search(fs: FaceSearch) -> set[str]:
                res = fs.search.by_vectors("big", probe, operation="search.vectors",
                                           max_results=10, threshold=0)
                return {m.face.face_id for m in res.results[0].matches}

            first = search(b)
            target = next(iter(first))
            t = time.perf_counter()
            a.erasure.delete_faces("big", [target])
            deleted_s = time.perf_counter() - t
            t = time.perf_counter()
            after = search(b)
            print(f"delete on A: {deleted_s * 1000:.0f} ms; B's next search "
                  f"{(time.perf_counter() - t) * 1000:.0f} ms, the face "
                  f"{'still found' if target in after else 'gone'} "
                  f"(its catch-up read {b.indexes.stats.rows:,} rows, "
                  f"{b.indexes.stats.full} full reconciliations)",
                  flush=True)
            t = time.perf_counter()
            b.shutdown()
            print(f"node B stopped in {time.perf_counter() - t:.1f} s (index file written)")
            _fill(a, "big", 100)  # another image: new faces
            gone = list(after)[:5]
            a.erasure.delete_faces("big", gone)
            t = time.perf_counter()
            b = node("b")
            opened = time.perf_counter() - t
            t = time.perf_counter()
            again = search(b)
            print(f"node B restarted: open {opened:.1f} s, first search "
                  f"{time.perf_counter() - t:.1f} s; read {b.indexes.stats.rows} rows "
                  f"({b.indexes.stats.full} full reconciliations); deleted faces returned: "
                  f"{len(set(gone) & again)}", flush=True)
            a.shutdown()
            b.shutdown()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
