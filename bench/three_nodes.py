"""Three nodes on one machine, as docs/deploy.md sets them up: PostgreSQL (an owner role that
migrates, an application role the nodes use, metadata and audit databases), Milvus standalone
(its ports on loopback, deploy.md's message-log and garbage-collector settings), and two HTTP
API nodes (``facesearch serve`` from ``.venv-milvus``, a data directory each, the same secrets).
Then, through the Rekognition-compatible endpoint with boto3:

- N faces with synthetic vectors written through the store in bulk (``search_latency.fill``:
  10,000 faces a transaction), and into Milvus by the vector backend's catch-up (10,000 rows a
  call), both timed;
- IndexFaces of real photos (lfw-dev) on node A, 4 clients: images and faces per second;
- SearchFacesByImage (a real photo: detection and embedding included) and SearchFaces (by face
  id: the vector path only), 4 clients spread over both nodes: p50/p99;
- DeleteFaces on node A of a face node B returns, then SearchFaces on node B until it is gone;
- node B stopped (SIGTERM) and started again: its stop, ready (``/readyz``) and first search.

For each phase of requests, the CPU time each part used per request (from ``/proc``: node A,
node B, Milvus, PostgreSQL with its backends, and this process, the boto3 clients; less what
each used idle, measured for 20 s before the phases: Milvus indexes in the background after
a bulk load), which says where a request's time goes when all of them share the machine; ``--sequential N`` also
times N of each search from one client (no queueing: a request's own latency).

    .venv-milvus/bin/python bench/three_nodes.py [--faces 1000000] [--index-images 200]
                                                 [--searches 200] [--clients 4] [--wait-index]
                                                 [--sequential 0]

Run it alone: two servers of the ``milvus`` wheel cannot run at once (etcd's port 2380).
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
VENV = Path(sys.executable).parent
LFW = ROOT.parent / "shared" / "testdata" / "lfw-dev" / "images"


def pct(xs: list[float]) -> str:
    a = np.array(xs) * 1000
    return (f"p50 {np.percentile(a, 50):.0f} ms, p99 {np.percentile(a, 99):.0f} ms "
            f"({len(a)} requests)")


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used: user + system) of every process."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()
        out[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick)
    return out


def cpu_of(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process with its descendants (a root whose
    descendants are counted under another name is not counted twice)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[str, float] = {}
    for name, root in roots.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += table.get(pid, (0, 0.0))[1]
            todo += [c for c in children.get(pid, []) if c not in roots.values()]
        out[name] = total
    return out


def roles(server: Any) -> tuple[str, str]:
    """deploy.md's roles and databases; returns (metadata, audit) database names."""
    import psycopg

    with server.connect() as conn:
        conn.execute("CREATE ROLE facesearch_owner LOGIN")
        conn.execute("CREATE ROLE facesearch_app LOGIN")
        for db in ("facesearch", "facesearch_audit"):
            conn.execute(f"CREATE DATABASE {db} OWNER facesearch_owner TEMPLATE template0 "
                         "ENCODING 'UTF8' LOCALE 'C.UTF-8'")
    for db, grants in (("facesearch", [
            "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO facesearch_app",
            "GRANT USAGE, SELECT ON SEQUENCES TO facesearch_app"]),
            ("facesearch_audit", ["GRANT SELECT, INSERT ON TABLES TO facesearch_app"])):
        with psycopg.connect(host=str(server.socket_dir), user="facesearch_owner", dbname=db,
                             autocommit=True) as conn:
            for g in grants:
                conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public {g}")
    return "facesearch", "facesearch_audit"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=1_000_000)
    ap.add_argument("--index-images", type=int, default=200)
    ap.add_argument("--searches", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--sequential", type=int, default=0,
                    help="also time this many of each search from one client")
    ap.add_argument("--wait-index", action="store_true",
                    help="seal Milvus's segments and wait for their index before measuring "
                         "(else searches meet segments on the interim index, as right after a "
                         "bulk load)")
    args = ap.parse_args()
    import boto3
    import httpx
    from api_search import free_port, wait_ready
    from botocore.config import Config
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from search_latency import PROBE, fill

    from facesearch.config import Settings
    from facesearch.service import FaceSearch
    from facesearch.storage.milvus import ServerSettings
    from tests.milvus_server import start as start_milvus
    from tests.postgres import PostgresServer, binaries

    bindir = binaries()
    if bindir is None:
        print("PostgreSQL is not installed (scripts/install-test-deps)")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="facesearch-3n-"))
    pg = PostgresServer.start(bindir)
    milvus = None
    nodes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        t = time.perf_counter()
        meta, audit = roles(pg)
        secrets = tmp / "secrets"
        secrets.mkdir(mode=0o700)
        (secrets / "audit-ed25519.pem").write_bytes(Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        (secrets / "access-keys-master.key").write_text(
            base64.b64encode(os.urandom(32)).decode())
        milvus = start_milvus(tmp / "milvus", ServerSettings())
        print(f"PostgreSQL and Milvus up in {time.perf_counter() - t:.0f} s "
              f"(Milvus on port {milvus.listen_port})", flush=True)
        common = {
            "FACESEARCH_AUDIT_SIGNING_KEY": str(secrets / "audit-ed25519.pem"),
            "FACESEARCH_KEYS_MASTER_KEY_FILE": str(secrets / "access-keys-master.key"),
            "FACESEARCH_VECTOR_BACKEND": "milvus",
            "FACESEARCH_MILVUS_URI": f"http://127.0.0.1:{milvus.listen_port}",
            "FACESEARCH_MILVUS_PREFIX": "facesearch"}

        def urls(role: str) -> dict[str, str]:
            return {"FACESEARCH_DATABASE_URL": pg.url(meta, role),
                    "FACESEARCH_AUDIT_DATABASE_URL": pg.url(audit, role)}

        env_owner = {**os.environ, **common, **urls("facesearch_owner"),
                     "FACESEARCH_HOME": str(tmp / "owner")}
        subprocess.run([str(VENV / "facesearch"), "db", "upgrade"], env=env_owner, check=True,
                       capture_output=True)
        app_env = {**common, **urls("facesearch_app")}
        # the bulk load, in this process, as the application role (as a node would)
        fs = FaceSearch(Settings(home=tmp / "loader", **{  # type: ignore[arg-type]
            k.removeprefix("FACESEARCH_").lower(): v for k, v in app_env.items()}))
        fs.collections.create("big")
        key = fs.keys.create(["indexer", "searcher"], label="benchmark")
        t = time.perf_counter()
        fill(fs, "big", args.faces)
        fill_s = time.perf_counter() - t
        with fs.store.transaction() as conn:
            coll = fs.store.collections.get(conn, "big")
        t = time.perf_counter()
        entry = fs.indexes.get(coll)  # the backend's catch-up: every face into Milvus
        milvus_s = time.perf_counter() - t
        print(f"{args.faces:,} faces: into PostgreSQL through the store in {fill_s:.0f} s "
              f"({args.faces / fill_s:,.0f} faces/s); into Milvus by the backend's catch-up in "
              f"{milvus_s:.0f} s ({args.faces / milvus_s:,.0f} faces/s)", flush=True)
        if args.wait_index:
            from pymilvus import utility

            t = time.perf_counter()
            entry.collection.flush()  # type: ignore[attr-defined]
            utility.wait_for_index_building_complete(
                entry.collection.name, using=fs.indexes.alias)  # type: ignore[attr-defined]
            print(f"Milvus sealed the segments and built their IVF_SQ8 index in "
                  f"{time.perf_counter() - t:.0f} s", flush=True)
        fs.shutdown()

        ports = {"A": free_port(), "B": free_port()}

        def start_node(name: str) -> subprocess.Popen[bytes]:
            home = tmp / f"node{name}"
            env = {**os.environ, **app_env, "FACESEARCH_HOME": str(home),
                   "FACESEARCH_AUDIT_WITNESS": str(tmp / f"witness{name}.jsonl"),
                   "FACESEARCH_SEARCHES_PER_MINUTE": "0", "FACESEARCH_API_WORKERS": "1",
                   "FACESEARCH_API_LOG_LEVEL": "warning"}
            return subprocess.Popen([str(VENV / "facesearch"), "serve", "--port",
                                     str(ports[name])], env=env)

        t = time.perf_counter()
        for name in ports:
            nodes[name] = start_node(name)
        for name in ports:
            wait_ready(f"http://127.0.0.1:{ports[name]}", nodes[name])
        print(f"two API nodes ready in {time.perf_counter() - t:.1f} s", flush=True)

        def client(name: str) -> Any:
            c = boto3.client("rekognition", endpoint_url=f"http://127.0.0.1:{ports[name]}",
                             region_name="us-east-1", aws_access_key_id=key.info.key_id,
                             aws_secret_access_key=key.secret,
                             config=Config(retries={"max_attempts": 1}, read_timeout=600))
            c.meta.events.register("before-sign.rekognition.*", lambda request, **_: (
                request.headers.__setitem__("x-amz-meta-nonce", uuid.uuid4().hex)))
            return c

        def parallel(work: list[Any], fn: Any, n: int) -> tuple[list[float], float]:
            """``fn(client_no, item)`` over ``work`` in ``n`` threads: latencies, wall."""
            lat: list[float] = []
            lock = threading.Lock()

            def run(i: int) -> None:
                for item in work[i::n]:
                    t0 = time.perf_counter()
                    fn(i, item)
                    with lock:
                        lat.append(time.perf_counter() - t0)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
            t0 = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            return lat, time.perf_counter() - t0

        postmaster = int((pg.root / "data" / "postmaster.pid").read_text().split()[0])

        def parts() -> dict[str, int]:
            return {"node A": nodes["A"].pid, "node B": nodes["B"].pid,
                    "Milvus": milvus.server_proc.pid, "PostgreSQL": postmaster,
                    "clients": os.getpid()}

        idle: dict[str, float] = {}

        def cpu_per(before: dict[str, float], requests: int, wall: float) -> str:
            """CPU per request of each part, less what it uses idle over ``wall``."""
            after = cpu_of(parts())
            used = {k: max(0.0, after[k] - before[k] - idle.get(k, 0.0) * wall) * 1000
                    / requests for k in after}
            return ("CPU per request (less idle): "
                    + ", ".join(f"{k} {v:.1f} ms" for k, v in used.items())
                    + f"; total {sum(used.values()):.0f} ms; load average "
                    + " ".join(f"{x:.1f}" for x in os.getloadavg()))

        a, b = client("A"), client("B")
        probe = PROBE.read_bytes()
        for c in (a, b):  # warm-up: models loaded, Milvus collection loaded
            c.search_faces_by_image(CollectionId="big", Image={"Bytes": probe})
        cpu0, t0 = cpu_of(parts()), time.perf_counter()
        time.sleep(20)
        cpu1, idle_s = cpu_of(parts()), time.perf_counter() - t0
        idle.update({k: (cpu1[k] - cpu0[k]) / idle_s for k in cpu1})
        print("CPU used idle, per second: " + ", ".join(
            f"{k} {v * 1000:.0f} ms" for k, v in idle.items()), flush=True)
        images = sorted(LFW.rglob("*.jpg"))[:args.index_images]
        faces = [0]
        clients = [client("A") for _ in range(args.clients)]

        def index(i: int, path: Path) -> None:
            r = clients[i].index_faces(CollectionId="big", Image={"Bytes": path.read_bytes()},
                                       ExternalImageId=path.stem, MaxFaces=1)
            faces[0] += len(r["FaceRecords"])

        cpu0 = cpu_of(parts())
        lat, wall = parallel(images, index, args.clients)
        print(f"IndexFaces on node A, {args.clients} clients: {len(images) / wall:.2f} images/s, "
              f"{faces[0] / wall:.2f} faces/s; {pct(lat)}", flush=True)
        print(f"  {cpu_per(cpu0, len(images), wall)}", flush=True)

        both = [client("A" if i % 2 == 0 else "B") for i in range(args.clients)]
        cpu0 = cpu_of(parts())
        lat, wall = parallel(list(range(args.searches)), lambda i, _: both[i].search_faces_by_image(
            CollectionId="big", Image={"Bytes": probe}, MaxFaces=10), args.clients)
        print(f"SearchFacesByImage over both nodes, {args.clients} clients: "
              f"{args.searches / wall:.2f} requests/s; {pct(lat)}", flush=True)
        print(f"  {cpu_per(cpu0, args.searches, wall)}", flush=True)
        some = a.list_faces(CollectionId="big", MaxResults=100)["Faces"]
        ids = [f["FaceId"] for f in some]
        cpu0 = cpu_of(parts())
        lat, wall = parallel([ids[i % len(ids)] for i in range(args.searches)],
                             lambda i, fid: both[i].search_faces(
                                 CollectionId="big", FaceId=fid, MaxFaces=10,
                                 FaceMatchThreshold=0), args.clients)
        print(f"SearchFaces (by face id) over both nodes, {args.clients} clients: "
              f"{args.searches / wall:.2f} requests/s; {pct(lat)}", flush=True)
        print(f"  {cpu_per(cpu0, args.searches, wall)}", flush=True)
        if args.sequential:
            n = args.sequential
            cpu0 = cpu_of(parts())
            lat, wall = parallel(list(range(n)), lambda i, _: a.search_faces_by_image(
                CollectionId="big", Image={"Bytes": probe}, MaxFaces=10), 1)
            print(f"SearchFacesByImage, node A, one client: {pct(lat)}; "
                  f"{cpu_per(cpu0, n, wall)}", flush=True)
            cpu0 = cpu_of(parts())
            lat, wall = parallel([ids[i % len(ids)] for i in range(n)],
                                 lambda i, fid: a.search_faces(
                                     CollectionId="big", FaceId=fid, MaxFaces=10,
                                     FaceMatchThreshold=0), 1)
            print(f"SearchFaces, node A, one client: {pct(lat)}; {cpu_per(cpu0, n, wall)}",
                  flush=True)

        def found_on_b(probe_id: str) -> list[str]:
            r = b.search_faces(CollectionId="big", FaceId=probe_id, MaxFaces=10,
                               FaceMatchThreshold=0)
            return [m["Face"]["FaceId"] for m in r["FaceMatches"]]

        probe_id = ids[0]
        target = found_on_b(probe_id)[0]
        t0 = time.perf_counter()
        a.delete_faces(CollectionId="big", FaceIds=[target])
        t1 = time.perf_counter()
        polls = 0
        while target in found_on_b(probe_id):
            polls += 1
            time.sleep(0.05)
        t2 = time.perf_counter()
        print(f"DeleteFaces on node A took {(t1 - t0) * 1000:.0f} ms (erasure: Milvus delete, "
              f"flush and compaction); gone from node B's SearchFaces "
              f"{(t2 - t1) * 1000:.0f} ms after it returned ({polls} searches still found it)",
              flush=True)

        t0 = time.perf_counter()
        nodes["B"].send_signal(signal.SIGTERM)
        rc = nodes["B"].wait(timeout=300)
        stop_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        nodes["B"] = start_node("B")
        wait_ready(f"http://127.0.0.1:{ports['B']}", nodes["B"])
        ready_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        b = client("B")
        b.search_faces(CollectionId="big", FaceId=probe_id, MaxFaces=10, FaceMatchThreshold=0)
        first_s = time.perf_counter() - t1
        t1 = time.perf_counter()
        b.search_faces_by_image(CollectionId="big", Image={"Bytes": probe})
        image_s = time.perf_counter() - t1
        print(f"node B: SIGTERM to exit {stop_s:.1f} s (exit {rc}); started again: ready "
              f"(/readyz 200) in {ready_s:.1f} s, first SearchFaces {first_s * 1000:.0f} ms, "
              f"first SearchFacesByImage {image_s:.1f} s (models loaded)", flush=True)
        r = httpx.get(f"http://127.0.0.1:{ports['A']}/readyz", timeout=10)
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on "
              f"{os.cpu_count()} CPUs; node A /readyz {r.status_code}")
    finally:
        for p in nodes.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    p.kill()
        if milvus is not None:
            milvus.stop()
        pg.stop()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
