"""Bulk indexing and video jobs on a Ray cluster: a head and one worker node, started here on
loopback addresses, run the analysis; the results equal a local run's (same faces, same
vectors, same external ids), a second run skips what is indexed, and S3 prefixes (a moto
server) are read by the Ray tasks themselves."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facesearch.config import Settings
from facesearch.media.video_job import JobStatus
from facesearch.service import FaceSearch
from facesearch.services.indexing import BulkIndexer, IdFrom, Outcome, Summary
from facesearch.video.scan import VideoJobSettings
from facesearch.vision.pipeline import Pipeline

from ..clirun import run_cli
from ..media.video_helpers import ALEX_PHOTO, LIN_PHOTO, clip, watchlist
from ..storage.test_vector_backends import milvus_server  # noqa: F401 (Ray with Milvus)
from .test_indexing import lfw_people

HAVE_RAY = importlib.util.find_spec("ray") is not None
if not HAVE_RAY and os.environ.get("CI"):
    pytest.fail("Ray is not installed (pip install -e '.[ray]')", pytrace=False)
pytestmark = [pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (extra 'ray')"),
              pytest.mark.slow]  # a Ray cluster of two nodes per module

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
         "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "photos"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray cluster: the head and one worker node, one CPU each (their workers hold
    the S3 credentials in their environment, as on a real cluster)."""
    from .ray_cluster import LocalRay

    with LocalRay(workers=1, cpus=1, env=CREDS) as cluster:
        yield cluster.address


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    """24 lfw-dev photos of 8 people (3 each)."""
    return [p for person in lfw_people(8, 3) for p in person[:3]]


@pytest.fixture
def cluster(ray_address: str) -> Iterator[Any]:
    from facesearch.services.cluster import RayCluster

    c = RayCluster(ray_address)
    yield c
    c.shutdown()


def index(fs: FaceSearch, collection: str, files: list[Any], **kw: Any) -> Summary:
    return BulkIndexer(fs.collections, collection, settings=fs.settings, id_from=IdFrom.PARENT,
                       **kw).run(files)


def faces_of(fs: FaceSearch, collection: str) -> dict[str, list[tuple[str | None, np.ndarray,
                                                                     tuple[float, ...]]]]:
    """Each image's faces (by content hash): external id, vector, box."""
    out: dict[str, list[Any]] = {}
    faces, _ = fs.collections.list_faces(collection, limit=4096)
    with fs.store.transaction() as conn:
        coll = fs.store.collections.get(conn, collection)
        rows = fs.store.faces.all_rows(conn, coll.id)
        vecs = fs.store.faces.embeddings(conn, rows, 128)
        by_row = fs.store.faces.by_rows(conn, rows)
    vec_of = {by_row[int(r)].face_id: v for r, v in zip(rows, vecs, strict=True)}
    for f in faces:
        out.setdefault(f.image.sha256, []).append((f.external_id, vec_of[f.face_id], f.box))
    return {k: sorted(v, key=lambda t: t[2]) for k, v in out.items()}


def same_faces(a: dict[str, list[Any]], b: dict[str, list[Any]]) -> None:
    assert a.keys() == b.keys()
    for sha, faces in a.items():
        assert [x[0] for x in faces] == [x[0] for x in b[sha]]
        for (_, va, ba), (_, vb, bb) in zip(faces, b[sha], strict=True):
            assert np.allclose(ba, bb, atol=1e-3) and float(va @ vb) > 0.9999


def test_the_cluster_is_two_nodes_on_loopback(cluster: Any) -> None:
    assert sorted(cluster.nodes()) == ["127.0.0.2", "127.0.0.3"] and cluster.slots == 2


def test_bulk_index_on_ray_equals_a_local_run_and_resumes(fs: FaceSearch, cluster: Any,
                                                          photos: list[Path]) -> None:
    fs.collections.create("local")
    fs.collections.create("ray")
    here = index(fs, "local", photos, workers=1)
    there = index(fs, "ray", photos, cluster=cluster, chunk=4)
    assert (there.indexed, there.faces, there.failed) == (here.indexed, here.faces, 0)
    assert there.indexed == len(photos)
    same_faces(faces_of(fs, "ray"), faces_of(fs, "local"))
    again = index(fs, "ray", photos, cluster=cluster, chunk=4)
    assert (again.skipped, again.indexed) == (len(photos), 0)
    hits = fs.search.by_image("ray", photos[0]).results[0].matches
    assert hits and hits[0].face.external_id == photos[0].parent.name


def test_bulk_index_of_an_s3_prefix_reads_in_the_tasks_and_resumes(
        fs: FaceSearch, cluster: Any, photos: list[Path], moto_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    from facesearch.services.cluster import list_s3
    from facesearch.services.indexing import IMAGE_SUFFIXES

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3", endpoint_url=moto_url)
    s3.create_bucket(Bucket=BUCKET)
    for p in photos:
        s3.put_object(Bucket=BUCKET, Key=f"lfw/{p.parent.name}/{p.name}", Body=p.read_bytes())
    s3.put_object(Bucket=BUCKET, Key="lfw/broken.jpg", Body=b"not an image")
    objects = list(list_s3(f"s3://{BUCKET}/lfw/", IMAGE_SUFFIXES, endpoint_url=moto_url))
    assert len(objects) == len(photos) + 1
    fs.collections.create("local")
    fs.collections.create("s3")
    index(fs, "local", photos, workers=1)
    results: list[Any] = []
    summary = BulkIndexer(fs.collections, "s3", settings=fs.settings, id_from=IdFrom.PARENT,
                          cluster=cluster, chunk=5).run(objects, results.append)
    assert (summary.indexed, summary.failed) == (len(photos), 1)
    assert [r.outcome for r in results if str(r.path).endswith("broken.jpg")] == [Outcome.FAILED]
    same_faces(faces_of(fs, "s3"), faces_of(fs, "local"))
    listed, _ = fs.collections.list_faces("s3", limit=1)
    assert (listed[0].image.source or "").startswith(f"s3://{BUCKET}/lfw/")
    again = BulkIndexer(fs.collections, "s3", settings=fs.settings, cluster=cluster,
                        chunk=5).run(objects)
    assert (again.skipped, again.indexed, again.failed) == (len(photos), 0, 1)


def test_a_video_job_scanned_on_ray_equals_a_local_one(home: Path, pipeline: Pipeline,
                                                       ray_address: str) -> None:
    settings = VideoJobSettings(sample_fps=3)
    outcomes = []
    for name, address in (("local", None), ("ray", ray_address)):
        fs = FaceSearch(Settings(home=home.parent / name, ray_address=address,
                                 audit_signing_key=home.parent / "k" / f"{name}.pem"),
                        pipeline=pipeline)
        try:
            watchlist(fs, "hamilton", [LIN_PHOTO, ALEX_PHOTO])
            job_id = fs.video.start_face_search("hamilton", clip(), settings=settings)
            job = fs.video.wait(job_id, timeout_s=600)
            assert job.status is JobStatus.SUCCEEDED, job.status_message
            persons = fs.video.results.persons(job_id)
            outcomes.append((job.frames_analysed, job.persons,
                             [(p.first_ms, p.last_ms, p.matches) for p in persons]))
            if address is not None:
                assert fs.cluster is not None and fs.video.cluster is fs.cluster
        finally:
            fs.shutdown()
    (frames, n, local), (frames_ray, n_ray, ray) = outcomes
    assert (frames_ray, n_ray) == (frames, n) and len(ray) == len(local)
    for (first, last, ms), (first_r, last_r, ms_r) in zip(local, ray, strict=True):
        assert (first_r, last_r) == (first, last)
        assert [m.external_id for m in ms_r] == [m.external_id for m in ms]
        assert all(abs(a.similarity - b.similarity) < 0.01 for a, b in zip(ms, ms_r))
    assert any(ms and ms[0].external_id == "lin-manuel-miranda" for _, _, ms in ray)


def test_the_cli_indexes_a_folder_and_an_s3_prefix_on_ray(
        home: Path, ray_address: str, moto_url: str, photos: list[Path],
        tmp_path: Path) -> None:
    import json
    import shutil

    import boto3

    env = {**CREDS, "FACESEARCH_HOME": str(home), "COLUMNS": "200"}
    s3 = boto3.client("s3", endpoint_url=moto_url, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket="cli")
    folder = tmp_path / "photos"
    for i, p in enumerate(photos[:8]):
        if i % 2:
            s3.put_object(Bucket="cli", Key=f"in/{p.parent.name}/{p.name}", Body=p.read_bytes())
        else:
            (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, folder / p.parent.name / p.name)

    def cli(*args: str) -> dict[str, Any]:
        proc = run_cli(*args, env=env)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    cli("collection", "create", "c", "--json")
    args = ("index", "c", str(folder), "s3://cli/in/", "--ray", ray_address, "--id-from",
            "parent", "--s3-endpoint-url", moto_url, "--json")
    assert cli(*args)["summary"] == {"files": 8, "indexed": 8, "skipped": 0, "no_face": 0,
                                     "failed": 0, "faces": 8}
    assert cli(*args)["summary"]["skipped"] == 8
    faces = cli("faces", "list", "c", "--json")["faces"]
    assert sorted(f["external_id"] for f in faces) == sorted(p.parent.name for p in photos[:8])
    assert sum(f["source"].startswith("s3://cli/in/") for f in faces) == 4


def test_sigterm_stops_the_cli_indexing_on_ray_gracefully(
        home: Path, ray_address: str, tmp_path: Path) -> None:
    """SIGTERM to ``facesearch index --ray`` unwinds as Ctrl-C does (not through Ray's own
    handler, which exits 15 at once): status 143, the faces stored so far kept and their
    audit events appended, and a second run indexes the rest."""
    import json
    import shutil
    import signal
    import subprocess
    import sys

    env = {**os.environ, "FACESEARCH_HOME": str(home), "COLUMNS": "200"}
    folder = tmp_path / "photos"
    photos = [p for person in lfw_people(60, 2) for p in person[:2]]  # minutes of work
    for p in photos:
        (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / p.parent.name / p.name)
    assert run_cli("collection", "create", "c", env=env).returncode == 0
    args = [sys.executable, "-m", "facesearch", "index", "c", str(folder), "--ray", ray_address,
            "--id-from", "parent", "--json"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # one image done: indexing is under way
    assert json.loads(first)
    proc.send_signal(signal.SIGTERM)
    rest, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "terminated" in stderr
    with FaceSearch(Settings(home=home)) as fs:
        done = len(fs.collections.list_faces("c", limit=4096)[0])
        assert 1 <= done <= len(photos)
        records, _ = fs.audit.query(limit=10_000)
        assert sum(len(r.event.results) for r in records if r.event.operation == "index") \
            == done
        assert fs.audit.verify().ok
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600,
                           check=True)
    summary = json.loads(again.stdout.strip().splitlines()[-1])["summary"]
    # Every photo is done by the rerun: indexed before (skipped), now, or with no face that
    # passes the quality filter (looked at again, never enrolled).
    assert summary["skipped"] + summary["indexed"] + summary["no_face"] == len(photos)
    assert summary["failed"] == 0
    assert summary["skipped"] >= 1


def test_the_cli_indexes_on_ray_into_milvus(home: Path, ray_address: str, photos: list[Path],
                                             tmp_path: Path, request: pytest.FixtureRequest
                                             ) -> None:
    """Ray with Milvus, the one documented way (docs/deploy.md): the CLI and the Ray nodes in
    .venv-milvus, vectors on Milvus. The faces indexed on the cluster are in Milvus, and a
    service on the same database and Milvus (an API node) finds them without rewriting them.
    Runs where Milvus does (FACESEARCH_TEST_MILVUS=1 in .venv-milvus)."""
    import json
    import shutil
    import uuid

    server = request.getfixturevalue("milvus_server")  # skips where Milvus is not installed
    backend = {"FACESEARCH_VECTOR_BACKEND": "milvus",
               "FACESEARCH_MILVUS_URI": f"http://127.0.0.1:{server.listen_port}",
               "FACESEARCH_MILVUS_PREFIX": "t" + uuid.uuid4().hex[:12]}
    env = {"FACESEARCH_HOME": str(home), **backend}
    folder = tmp_path / "photos"
    for p in photos[:9]:
        (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / p.parent.name / p.name)
    assert run_cli("collection", "create", "c", env=env).returncode == 0
    proc = run_cli("index", "c", str(folder), "--ray", ray_address, "--id-from", "parent",
                   "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])["summary"]
    assert summary["indexed"] == 9 and summary["faces"] >= 9
    settings = {k.removeprefix("FACESEARCH_").lower(): v for k, v in backend.items()}
    with FaceSearch(Settings(home=home, **settings)) as node:  # type: ignore[arg-type]
        with node.store.transaction() as conn:
            coll = node.store.collections.get(conn, "c")
        vectors = node.indexes.get(coll)
        assert vectors.kind == "milvus" and len(vectors) == summary["faces"]
        assert node.indexes.stats.rows == 0  # Milvus was up to date: nothing rewritten
        hits = node.search.by_image("c", photos[1]).results[0].matches
        assert hits[0].face.external_id == photos[1].parent.name
