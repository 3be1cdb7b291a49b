"""The command-line interface: JSON shapes for scripts, one-line errors, exit codes (run in
the test process, :mod:`tests.clirun`; a few tests start the real process where the process
itself is under test: output into a pipe, signals, the installed entry point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..clirun import CliResult, run_cli
from ..conftest import face


def run(home: Path, *args: str, ok: bool = True) -> CliResult:
    proc = run_cli(*args, env={"FACESEARCH_HOME": str(home), "COLUMNS": "200"})
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_detect_json_shape(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "annotated.jpg"
    d = json.loads(run(home, "detect", str(face("two_people.jpg")), "--json",
                       "--annotate", str(out)).stdout)
    assert (d["width"], d["height"]) == (1126, 661)
    assert len(d["faces"]) == 2
    f = d["faces"][0]
    assert len(f["box"]) == 4 and len(f["landmarks"]) == 5 and 0 <= f["score"] <= 1
    assert set(f["quality"]) == {"size", "sharpness", "brightness", "yaw", "pitch", "roll",
                                 "faceness", "recognisability"}
    assert 0 <= f["quality"]["recognisability"] <= 100 and 0 <= f["quality"]["faceness"] <= 1
    assert out.stat().st_size > 10_000


def test_compare_json(home: Path) -> None:
    same = json.loads(run(home, "compare", str(face("obama.jpg")), str(face("obama2.jpg")),
                          "--json").stdout)
    assert same["match"] is True and same["threshold"] == 80 and same["similarity"] > 90
    diff = json.loads(run(home, "compare", str(face("obama.jpg")), str(face("biden.jpg")),
                          "--json", "--threshold", "70").stdout)
    assert diff["match"] is False and diff["threshold"] == 70


def test_embed_json_lines(home: Path) -> None:
    a, b = str(face("obama.jpg")), str(face("two_people.jpg"))
    lines = run(home, "embed", a, b, "--json").stdout.strip().splitlines()
    objs = [json.loads(x) for x in lines]
    assert [o["path"] for o in objs] == [a, b]
    assert [len(o["faces"]) for o in objs] == [1, 2]
    emb = objs[0]["faces"][0]["embedding"]
    assert len(emb) == 128 and abs(sum(x * x for x in emb) - 1) < 1e-3


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with collection ``cli`` holding obama.jpg and biden.jpg (indexed by
    the CLI, external ids from the file names)."""
    home = tmp_path_factory.mktemp("cli") / "home"
    run(home, "collection", "create", "cli")
    run(home, "index", "cli", str(face("obama.jpg")), str(face("biden.jpg")))
    return home


def test_index_and_list(gallery: Path) -> None:
    listed = json.loads(run(gallery, "collection", "list", "--json").stdout)
    assert [(c["name"], c["faces"]) for c in listed["collections"]] == [("cli", 2)]
    faces = json.loads(run(gallery, "faces", "list", "cli", "--json").stdout)["faces"]
    assert sorted(f["external_id"] for f in faces) == ["biden", "obama"]
    assert all(f["source"].endswith(f"{f['external_id']}.jpg") for f in faces)


def test_paths_are_not_wrapped_into_a_pipe(gallery: Path) -> None:
    """Into a pipe without COLUMNS (rich would assume 80 columns), a table's paths and ids
    stay whole, each on one line."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run([sys.executable, "-m", "facesearch", "faces", "list", "cli"],
                          env={**env, "FACESEARCH_HOME": str(gallery)}, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if "obama" in ln]
    assert len(rows) == 1 and str(face("obama.jpg")) in rows[0], proc.stdout


def test_search_json_shape(gallery: Path) -> None:
    res = json.loads(run(gallery, "search", "cli", str(face("obama2.jpg")), "--json").stdout)
    assert len(res["probes"]) == 1  # the shape of /v1's answer (README, "CLI JSON")
    matches = res["probes"][0]["matches"]
    assert [m["face"]["external_id"] for m in matches] == ["obama"]
    assert set(matches[0]) >= {"face", "similarity"} and matches[0]["similarity"] > 80
    assert res["false_match_rate"] > 0 and res["expected_fpir"] > 0  # the risk of the 80


def test_search_every_face(gallery: Path) -> None:
    allf = json.loads(run(gallery, "search", "cli", str(face("two_people.jpg")), "--all-faces",
                          "--json").stdout)
    assert {p["matches"][0]["face"]["external_id"] for p in allf["probes"]} == {"obama", "biden"}


def test_faces_delete(home: Path) -> None:
    run(home, "collection", "create", "cli")
    run(home, "index", "cli", str(face("obama.jpg")), str(face("biden.jpg")))
    faces = json.loads(run(home, "faces", "list", "cli", "--json").stdout)["faces"]
    run(home, "faces", "delete", "cli", faces[0]["face_id"])
    left = json.loads(run(home, "faces", "list", "cli", "--json").stdout)["faces"]
    assert [f["face_id"] for f in left] == [faces[1]["face_id"]]


def test_users_and_collection_delete(home: Path) -> None:
    run(home, "collection", "create", "cli")
    run(home, "users", "create", "cli", "someone")
    users = json.loads(run(home, "users", "list", "cli", "--json").stdout)["users"]
    assert users[0]["user_id"] == "someone"
    run(home, "collection", "delete", "cli", "--yes")
    assert json.loads(run(home, "collection", "list", "--json").stdout)["collections"] == []


def test_detect_is_audited(home: Path) -> None:
    """The CLI's detect is an operation on biometric data like the API's: audited, with the
    image's hash (it was not, before the one service path)."""
    import hashlib

    run(home, "detect", str(face("obama.jpg")))
    events = json.loads(run(home, "audit", "list", "--operation", "detect", "--json").stdout)
    assert len(events["events"]) == 1
    assert events["events"][0]["probe_sha256"] == hashlib.sha256(
        face("obama.jpg").read_bytes()).hexdigest()


def test_review_names_a_real_search_and_one_of_its_candidates(gallery: Path) -> None:
    res = json.loads(run(gallery, "search", "cli", str(face("obama2.jpg")), "--json").stdout)
    sid, fid = res["search_id"], res["probes"][0]["matches"][0]["face"]["face_id"]
    run(gallery, "review", sid, fid, "confirmed", "--note", "same ear")
    made_up = run(gallery, "review", "00000000-0000-4000-8000-000000000000", fid, "confirmed",
                  ok=False)
    assert made_up.returncode == 1 and "no search" in made_up.stderr
    other = json.loads(run(gallery, "faces", "list", "cli", "--json").stdout)["faces"]
    not_candidate = next(f["face_id"] for f in other if f["face_id"] != fid)
    wrong = run(gallery, "review", sid, not_candidate, "confirmed", ok=False)
    assert wrong.returncode == 1 and "not a candidate" in wrong.stderr


def test_audit_report_of_a_period(home: Path, tmp_path: Path) -> None:
    """``audit report --from --to``: the transparency report as JSON, HTML or PDF, aggregates
    only (the search's case reference and probe hash are in the trail, not in the report)."""
    import datetime
    import hashlib

    run(home, "collection", "create", "cli")
    run(home, "index", "cli", str(face("obama.jpg")))
    run(home, "search", "cli", str(face("obama2.jpg")), "--purpose", "fraud", "--case",
        "CASE-4711")
    today = datetime.date.today().isoformat()
    out = tmp_path / "r.json"
    run(home, "audit", "report", "--from", today, "--to", today, "--format", "json",
        "--out", str(out))
    r = json.loads(out.read_text())
    assert r["searches"] == 1 and r["candidates_returned"] == 1
    # One search: under the smallest published count (5), so no purpose row (issue 26).
    assert r["searches_by_purpose"] == []
    page = run(home, "audit", "report", "--from", today, "--to", today, "-o", "-").stdout
    assert page.startswith("<!doctype html>") and "fraud" not in page
    probe = hashlib.sha256(face("obama2.jpg").read_bytes()).hexdigest()
    for text in (out.read_text(), page):
        assert "CASE-4711" not in text and probe not in text
    pdf = tmp_path / "r.pdf"
    run(home, "audit", "report", "--from", today, "--to", today, "--format", "pdf", "-o",
        str(pdf))
    assert pdf.read_bytes().startswith(b"%PDF")
    # a period before anything happened: nothing counted
    empty = run(home, "audit", "report", "--from", "2001-01-01", "--to", "2001-12-31",
                "--format", "json", "--out", "-").stdout
    assert json.loads(empty)["searches"] == 0
    bad = run(home, "audit", "report", "--from", today, "--to", today, "--format", "pdf",
              "--out", "-", ok=False)
    assert bad.returncode == 2 and "--out" in bad.stderr


def test_audit_report_without_options_writes_a_file(home: Path, tmp_path: Path) -> None:
    """``facesearch audit report`` alone: the last 30 days, written to a file named for the
    period in the current folder (its name printed whole, on one line, whatever the width of
    a non-terminal output), never HTML onto the terminal."""
    import datetime

    run(home, "collection", "create", "cli")
    work = tmp_path / ("a-rather-long-folder-name-for-the-report-" * 2)
    work.mkdir()
    proc = run_cli("audit", "report", cwd=work,
                   env={"COLUMNS": None, "FACESEARCH_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    today = datetime.date.today()
    first = today - datetime.timedelta(days=29)
    name = f"transparency-report-{first.isoformat()}-{today.isoformat()}.html"
    written = work / name
    assert written.read_text().startswith("<!doctype html>")
    assert proc.stdout == ""
    # the name is printed whole on one line (no wrapping at 80 columns into a pipe)
    assert name in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_serve_help_names_the_web_app(home: Path) -> None:
    text = run(home, "serve", "--help").stdout
    assert "/ui/" in text and "web app" in text


def test_library_snippet_runs_twice(home: Path) -> None:
    """The README's library example: creating a collection that exists is fine with
    ``exist_ok=True``, and indexing the same photo again is skipped."""
    from facesearch.errors import AlreadyExistsError
    from facesearch.service import FaceSearch

    for _ in range(2):
        with FaceSearch.open(home) as fs:
            fs.collections.create("bookings", exist_ok=True)
            fs.collections.index_image("bookings", face("obama.jpg"), external_id="case-123")
            result = fs.search.by_image("bookings", face("obama2.jpg"), max_results=10)
            assert [m.face.external_id for m in result.matches] == ["case-123"]
            assert result.risk is not None and result.risk.false_match_rate < 0.01
            with pytest.raises(AlreadyExistsError):
                fs.collections.create("bookings")
        with FaceSearch.open(home) as fs:
            assert fs.collections.describe("bookings").face_count == 1


def test_eval_lfw_logs_progress_when_not_a_terminal(home: Path, tmp_path: Path) -> None:
    """Into a pipe (a log, CI), ``eval lfw`` prints its progress as lines, not nothing."""
    from ..conftest import TESTDATA

    root = TESTDATA / "lfw-dev"
    lines = (root / "pairsDevTest.txt").read_text().splitlines()
    n = int(lines[0])
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(["3", *lines[1:4], *lines[1 + n:4 + n]]) + "\n")
    proc = run(home, "eval", "lfw", "--pairs", str(pairs), "--train", str(pairs),
               "--images", str(root / "images"), "--no-cache", "--workers", "1")
    progress = [ln for ln in proc.stderr.splitlines() if "embedding (" in ln]
    assert progress, proc.stderr
    assert "(100 %" in progress[-1] and len(progress) >= 2
    assert "accuracy" in proc.stdout.lower()


@pytest.mark.parametrize(("args", "words"), [
    (("search", "missing", "{obama}"), "does not exist"),
    (("compare", "{blank}", "{obama}"), "no face"),
    (("detect", "{garbage}"), "not a recognised image format"),
    (("detect", "/no/such/file.jpg"), "no such file"),
    (("collection", "create", "bad name"), "invalid collection name"),
])
def test_errors_exit_nonzero_with_one_line(home: Path, tmp_path: Path, args: tuple[str, ...],
                                           words: str) -> None:
    blank = tmp_path / "blank.png"
    from PIL import Image as PILImage
    PILImage.new("RGB", (200, 200), (90, 90, 90)).save(blank)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"hello" * 100)
    subs = {"{obama}": str(face("obama.jpg")), "{blank}": str(blank), "{garbage}": str(garbage)}
    proc = run(home, *[subs.get(a, a) for a in args], ok=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_usage_error_exits_2(home: Path) -> None:
    proc = run(home, "search", ok=False)
    assert proc.returncode == 2


def test_an_in_process_run_leaves_the_test_process_as_it_was(home: Path, tmp_path: Path) -> None:
    """The in-process runner (:mod:`tests.clirun`) puts back what a command sets for its
    process: the service's umask 077, the CLI's SIGTERM handler and logging handler, the
    working directory and the environment."""
    import logging
    import signal

    before = (signal.getsignal(signal.SIGTERM), os.getcwd(), dict(os.environ),
              list(logging.getLogger("facesearch.setup").handlers))
    old = os.umask(0o022)
    try:
        made = run_cli("collection", "create", "c", cwd=tmp_path,
                       env={"FACESEARCH_HOME": str(home)})
        assert made.returncode == 0, made.stderr
        assert (home / "facesearch.db").stat().st_mode & 0o077 == 0  # the service's umask
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(old)
    assert (signal.getsignal(signal.SIGTERM), os.getcwd(), dict(os.environ),
            list(logging.getLogger("facesearch.setup").handlers)) == before


def test_the_installed_command_exits_1_with_one_line_or_2_on_usage(home: Path) -> None:
    """The entry point pip installs (``.venv/bin/facesearch``), as a process: a facesearch
    error is one line on stderr and status 1, a usage error status 2."""
    command = Path(sys.executable).with_name("facesearch")
    env = {**os.environ, "FACESEARCH_HOME": str(home)}
    bad = subprocess.run([str(command), "collection", "create", "bad name"], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 1 and bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid collection name" in lines[0], bad.stderr
    usage = subprocess.run([str(command), "search"], env=env, capture_output=True, text=True,
                           timeout=300, check=False)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr, usage.stderr


@pytest.mark.slow
def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    """SIGTERM (systemd, container runtimes) shuts the server down as Ctrl-C does: the vector
    index is written and a final checkpoint signs the audit trail's head."""
    import signal

    from facesearch.service import FaceSearch

    from ..api.conftest import start_server

    home = tmp_path / "home"
    server = start_server(home, tmp_path / "server.log")
    try:
        with server.native("admin") as admin:
            assert admin.post("/v1/collections", json={"name": "c"}).status_code == 201
        with server.native("indexer") as c:
            r = c.post("/v1/collections/c/faces",
                       files={"image": ("obama.jpg", face("obama.jpg").read_bytes(),
                                        "image/jpeg")})
            assert r.status_code == 200, r.text
        assert not list((home / "indexes").glob("*.faiss"))  # not yet written
    finally:
        server.proc.send_signal(signal.SIGTERM)
        rc = server.proc.wait(timeout=120)
    assert rc == 128 + signal.SIGTERM, (tmp_path / "server.log").read_text()[-3000:]
    assert len(list((home / "indexes").glob("*.faiss"))) == 1
    with FaceSearch(server.settings()) as fs:
        report = fs.audit.verify()
        assert report.ok and report.head_seq > 0
        assert fs.audit.checkpoints()[-1].seq == report.head_seq
