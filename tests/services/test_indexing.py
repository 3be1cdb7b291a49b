"""Bulk indexing: identification on LFW people, kill -9 in the middle, resume."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facesearch.config import Settings
from facesearch.errors import NoFaceError
from facesearch.service import FaceSearch
from facesearch.services.indexing import BulkIndexer, IdFrom, Outcome, iter_image_files

from ..clirun import run_cli
from ..conftest import LFW, face


def lfw_people(n: int, min_images: int) -> list[list[Path]]:
    """The first ``n`` lfw-dev people (by name) with at least ``min_images`` images."""
    root = LFW / "images"
    if not root.is_dir():
        pytest.fail(f"test data missing: {root}", pytrace=False)
    people = []
    for d in sorted(root.iterdir()):
        imgs = sorted(d.glob("*.jpg"))
        if len(imgs) >= min_images:
            people.append(imgs)
        if len(people) == n:
            break
    return people


@pytest.mark.slow
def test_rank1_identification_on_50_lfw_people(fs: FaceSearch) -> None:
    people = lfw_people(50, 2)
    gallery = [imgs[0] for imgs in people]
    probes = [(p.parent.name, p) for imgs in people for p in imgs[1:5]]
    fs.collections.create("lfw")
    indexer = BulkIndexer(fs.collections, "lfw", settings=fs.settings,
                          id_from=IdFrom.PARENT, workers=2)
    summary = indexer.run(gallery)
    assert summary.files == 50 and summary.failed == 0
    assert summary.indexed >= 49
    hits = 0
    for name, path in probes:
        try:
            res = fs.search.by_image("lfw", path, max_results=1, threshold=0)
        except NoFaceError:
            continue  # strict: a probe whose face is not found is a miss
        top = res.results[0].matches
        hits += bool(top) and top[0].face.external_id == name
    rate = hits / len(probes)
    assert len(probes) >= 80
    assert rate >= 0.95, f"rank-1 {rate:.3f} over {len(probes)} probes"


def test_bulk_summary_reasons_and_resume(fs: FaceSearch, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    blank = tmp_path / "blank.png"
    from PIL import Image as PILImage
    PILImage.new("RGB", (200, 200), (90, 90, 90)).save(blank)
    files = [face("obama.jpg"), face("two_people.jpg"), bad, blank]
    fs.collections.create("b")
    seen = []
    indexer = BulkIndexer(fs.collections, "b", settings=fs.settings, workers=2)
    s = indexer.run(files, seen.append)
    # two_people.jpg is labelled by its name: one face of it is enrolled (the largest).
    assert (s.indexed, s.faces, s.failed, s.no_face, s.skipped) == (2, 2, 1, 1, 0)
    reasons = dict(s.failures)
    assert "corrupt" in reasons[str(bad)] or "cannot read" in reasons[str(bad)]
    assert reasons[str(blank)] == "no face found"
    assert {r.path for r in seen} == set(files)
    again = indexer.run(files)
    assert (again.indexed, again.skipped, again.failed) == (0, 3, 1)
    assert fs.collections.describe("b").face_count == 2
    # Each face's review crop was cut in the worker and stored with it.
    faces, _ = fs.collections.list_faces("b")
    cards, _ = fs.collections.face_cards("b", [f.face_id for f in faces])
    assert len(cards) == 2 and all(c.crop is not None for c in cards)
    assert {c.source_name for c in cards} == {"obama.jpg", "two_people.jpg"}
    # One audit event per indexed image, naming its faces; the chain stays intact.
    events, _ = fs.audit.query(operation="index", collection="b")
    assert sorted(len(e.event.results) for e in events) == [1, 1]
    assert fs.audit.verify().ok


def test_iter_image_files_is_recursive_and_sorted(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").mkdir(parents=True)
    for p in ["b/2.jpg", "a/x/1.PNG", "a/notes.txt", "a/0.webp"]:
        (tmp_path / p).write_bytes(b"")
    got = [p.relative_to(tmp_path).as_posix() for p in iter_image_files([tmp_path])]
    assert got == ["a/0.webp", "a/x/1.PNG", "b/2.jpg"]


def _db_counts(db: Path) -> tuple[int, int]:
    con = sqlite3.connect(db, timeout=30)
    try:
        return (con.execute("select count(*) from images").fetchone()[0],
                con.execute("select count(*) from faces").fetchone()[0])
    finally:
        con.close()


@pytest.mark.slow
def test_kill_9_mid_index_leaves_a_consistent_collection(tmp_path: Path, pipeline) -> None:  # noqa: ANN001
    home = tmp_path / "home"
    files = [p for imgs in lfw_people(40, 1) for p in imgs[:2]][:60]
    listing = tmp_path / "files"
    listing.mkdir()
    for i, p in enumerate(files):  # symlinks: a folder to index without copying the data
        (listing / f"{i:03d}_{p.name}").symlink_to(p)
    env = {**os.environ, "FACESEARCH_HOME": str(home)}
    cli = [sys.executable, "-m", "facesearch"]
    assert run_cli("collection", "create", "k", env={"FACESEARCH_HOME": str(home)}).returncode == 0
    proc = subprocess.Popen([*cli, "index", "k", str(listing), "--workers", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    db = home / "facesearch.db"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and _db_counts(db)[0] < 8:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker processes, mid-run
    proc.wait()
    images_at_kill, faces_at_kill = _db_counts(db)
    assert 8 <= images_at_kill < len(files), "the kill must land mid-run"

    con = sqlite3.connect(db)
    per_image = con.execute(
        "select i.faces_indexed, count(f.id) from images i left join faces f "
        "on f.image_row = i.id group by i.id").fetchall()
    assert all(a == b for a, b in per_image), "every committed image has all its faces"
    dup = con.execute("select count(*) - count(distinct sha256) from images").fetchone()[0]
    assert dup == 0
    con.close()

    with FaceSearch(Settings(home=home), pipeline=pipeline) as fs:
        coll = fs.collections.describe("k")
        assert coll.face_count == faces_at_kill
        with fs.store.transaction() as conn:
            row = fs.store.collections.find(conn, "k")
            assert row is not None
            truth = fs.store.faces.all_rows(conn, row.id)
        index = fs.indexes.get(row)
        assert np.array_equal(np.sort(index.ids()), truth)

    done = run_cli("index", "k", str(listing), "--workers", "2", "--json",
                   env={"FACESEARCH_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    outcomes = [line for line in done.stdout.splitlines() if '"outcome"' in line]
    assert sum('"skipped"' in line for line in outcomes) == images_at_kill
    images, total_faces = _db_counts(db)
    assert images == len({p.read_bytes() for p in files})
    with FaceSearch(Settings(home=home), pipeline=pipeline) as fs:
        assert fs.collections.describe("k").face_count == total_faces
        res = fs.search.by_image("k", files[0], max_results=1)
        assert res.results[0].matches[0].similarity > 99
    assert any(o.value == "indexed" for o in Outcome)


def _children(pid: int) -> set[int]:
    """Pids of the live processes whose parent is ``pid`` (Linux /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


@pytest.mark.slow
def test_kill_9_of_the_cli_alone_ends_its_workers(tmp_path: Path) -> None:
    """Only the CLI parent is killed (as an OOM killer or a bare ``kill -9 PID`` does); its
    worker processes notice and exit instead of living on as orphans."""
    home = tmp_path / "home"
    files = [p for imgs in lfw_people(40, 1) for p in imgs[:2]][:60]
    listing = tmp_path / "files"
    listing.mkdir()
    for i, p in enumerate(files):
        (listing / f"{i:03d}_{p.name}").symlink_to(p)
    env = {**os.environ, "FACESEARCH_HOME": str(home)}
    cli = [sys.executable, "-m", "facesearch"]
    assert run_cli("collection", "create", "k", env={"FACESEARCH_HOME": str(home)}).returncode == 0
    proc = subprocess.Popen([*cli, "index", "k", str(listing), "--workers", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    workers: set[int] = set()
    while time.monotonic() < deadline and (len(workers) < 2 or _db_counts(home / "facesearch.db")[0] < 2):
        workers = _children(proc.pid)
        time.sleep(0.05)
    assert len(workers) >= 2, "the workers never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = {w for w in alive if Path(f"/proc/{w}").exists()
                 and Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"}
        time.sleep(0.1)
    for w in alive:  # leave nothing behind whatever the outcome
        os.kill(w, signal.SIGKILL)
    assert not alive, f"workers {sorted(alive)} outlived their parent"


def test_a_label_names_one_face(fs: FaceSearch, tmp_path: Path) -> None:
    """A labelled photo with a second person enrols only its largest face that passes the
    quality filter; the other is reported, with the reason NOT_LABELLED_FACE. Asked for
    every face (a group photo), or without a label, both are enrolled."""
    from facesearch.services.enrolment import NOT_LABELLED_FACE

    fs.collections.create("one")
    res = fs.collections.index_image("one", face("two_people.jpg"), external_id="obama")
    assert len(res.faces) == 2 and len(res.indexed) == 1
    assert res.indexed[0].external_id == "obama"
    assert [u.reasons for u in res.unindexed] == [[NOT_LABELLED_FACE]]
    events, _ = fs.audit.query(operation="index", collection="one")
    assert events[-1].event.details["recognisability"] == (
        f"{res.indexed[0].quality['recognisability']:.0f}")
    assert res.unindexed[0].face_index == 1  # the smaller face
    kept = res.faces.areas[0]
    assert kept >= res.faces.areas[1]
    fs.collections.create("group")
    group = fs.collections.index_image("group", face("two_people.jpg"), external_id="event",
                                       all_faces=True)
    assert len(group.indexed) == 2 and not group.unindexed
    fs.collections.create("unlabelled")
    plain = fs.collections.index_image("unlabelled", face("two_people.jpg"))
    assert len(plain.indexed) == 2

    # Bulk: --id-from parent labels every file; --all-faces keeps the group photo's faces.
    person = tmp_path / "Barack_Obama"
    person.mkdir()
    for name in ("two_people.jpg", "obama.jpg"):
        (person / name).write_bytes(face(name).read_bytes())
    fs.collections.create("bulk")
    seen = []
    s = BulkIndexer(fs.collections, "bulk", settings=fs.settings, id_from=IdFrom.PARENT,
                    workers=1).run(sorted(person.iterdir()), seen.append)
    assert (s.indexed, s.faces) == (2, 2)
    group_photo = next(r for r in seen if r.path.name == "two_people.jpg")
    assert group_photo.faces_detected == 2 and group_photo.faces_indexed == 1
    assert group_photo.result is not None
    assert group_photo.result.unindexed[0].reasons == [NOT_LABELLED_FACE]
    fs.collections.create("bulk-all")
    s = BulkIndexer(fs.collections, "bulk-all", settings=fs.settings, id_from=IdFrom.PARENT,
                    workers=1, all_faces=True).run(sorted(person.iterdir()))
    assert s.faces == 3
