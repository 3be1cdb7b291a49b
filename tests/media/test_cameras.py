"""Cameras: the inputs the operator names, how Rekognition's Kinesis video stream ARNs name
them, and processors that read them (looked up at each start, not held to the egress policy,
never a URL a client chose)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from facesearch.config import Settings
from facesearch.errors import (
    AlreadyExistsError,
    CameraNotFoundError,
    EncryptionError,
    InvalidParameterError,
)
from facesearch.media.cameras import camera_of_arn
from facesearch.media.stream.model import ProcessorStatus, StreamSettings
from facesearch.media.webhook import EgressRefusedError
from facesearch.service import FaceSearch
from facesearch.storage.schema import cameras_t

from ..clirun import CliResult, run_cli
from .video_helpers import LIN_PHOTO, clip, wait_for, watchlist


@pytest.mark.parametrize(("arn", "camera"), [
    ("arn:aws:kinesisvideo:us-east-1:123456789012:stream/door-1/1700000000000", "door-1"),
    ("arn:aws-us-gov:kinesisvideo:us-gov-west-1:123456789012:stream/lobby.cam_2/7", "lobby.cam_2"),
    ("arn:aws:kinesisvideo:us-east-1:123456789012:stream/door-1", None),  # no creation part
    ("arn:aws:kinesis:us-east-1:123456789012:stream/door-1/1", None),  # a data stream
    ("arn:aws:kinesisvideo:us-east-1:1234:stream/door-1/1", None),  # not an account
    ("arn:aws:kinesisvideo:us-east-1:123456789012:stream/a b/1", None),
])
def test_kinesis_video_arns_name_cameras(arn: str, camera: str | None) -> None:
    if camera is None:
        with pytest.raises(InvalidParameterError):
            camera_of_arn(arn)
    else:
        assert camera_of_arn(arn) == camera


def test_add_list_remove(fs: FaceSearch) -> None:
    cam = fs.cameras.add("door", "rtsp://viewer:s3cret@10.1.2.3:554/stream1", label="front door")
    assert cam.shown_url == "rtsp://viewer:***@10.1.2.3:554/stream1"
    assert cam.added_by.startswith("local:")
    fs.cameras.add("desk", "/dev/video0")  # a device: the operator's own choice
    assert [c.name for c in fs.cameras.list_cameras()] == ["desk", "door"]
    assert fs.cameras.get("door").url == "rtsp://viewer:s3cret@10.1.2.3:554/stream1"
    with pytest.raises(AlreadyExistsError):
        fs.cameras.add("door", "rtsp://10.1.2.4/x")
    for name, url, fmt in (("bad name", "rtsp://cam/x", None), ("ftp", "ftp://cam/x", None),
                           ("fmt", "rtsp://cam/x", "concat")):
        with pytest.raises(InvalidParameterError):
            fs.cameras.add(name, url, input_format=fmt)
    fs.cameras.remove("desk")
    with pytest.raises(CameraNotFoundError):
        fs.cameras.remove("desk")
    with pytest.raises(CameraNotFoundError):
        fs.cameras.get("desk")
    events, _ = fs.audit.query(operation="camera.*")
    assert [e.event.operation for e in events] == ["camera.add", "camera.add", "camera.remove"]
    assert events[0].event.details["url"] == "rtsp://viewer:***@10.1.2.3:554/stream1"
    assert "s3cret" not in json.dumps([e.to_json() for e in events])


def test_processors_read_cameras(fs: FaceSearch) -> None:
    watchlist(fs, "watch", [LIN_PHOTO])
    with pytest.raises(ValidationError, match="exactly one of input_url or camera"):
        StreamSettings(input_url=str(clip()), camera="door", collection="watch")
    with pytest.raises(ValidationError):
        StreamSettings(collection="watch")
    with pytest.raises(CameraNotFoundError):
        fs.streams.create("p", StreamSettings(camera="door", collection="watch"))
    # A private host: refused as a client's input URL, allowed as the operator's camera.
    with pytest.raises(EgressRefusedError):
        fs.streams.create("p", StreamSettings(input_url="rtsp://10.1.2.3/s", collection="watch"))
    fs.cameras.add("door", "rtsp://viewer:s3cret@10.1.2.3/s")
    info = fs.streams.create("p", StreamSettings(camera="door", collection="watch"))
    assert info.settings.camera == "door" and info.settings.input_url is None
    fs.streams.delete("p")

    # The camera is looked up at each start: a file played as a camera, then gone.
    fs.cameras.add("clip", str(clip()))
    fs.streams.create("q", StreamSettings(camera="clip", collection="watch", max_fps=4))
    fs.streams.start("q")
    wait_for(lambda: (m := fs.streams.metrics("q")) is not None and m.frames_processed > 0, 60,
             "a processed frame")
    assert fs.streams.describe("q").status is ProcessorStatus.RUNNING
    fs.streams.stop("q")
    fs.cameras.remove("clip")
    with pytest.raises(CameraNotFoundError):
        fs.streams.start("q")


def test_cli(home: Path) -> None:
    def run(*args: str, ok: bool = True) -> CliResult:
        proc = run_cli("cameras", *args, env={"FACESEARCH_HOME": str(home)})
        assert (proc.returncode == 0) == ok, proc.stderr
        return proc

    made = json.loads(run("add", "door", "rtsp://u:pw@10.0.0.9/live", "--label", "door",
                          "--json").stdout)
    assert made["url"] == "rtsp://u:***@10.0.0.9/live" and made["label"] == "door"
    assert "pw@" not in run("list").stdout
    assert [c["name"] for c in json.loads(run("list", "--json").stdout)["cameras"]] == ["door"]
    assert "already exists" in run("add", "door", "rtsp://x/y", ok=False).stderr
    run("remove", "door")
    assert json.loads(run("list", "--json").stdout)["cameras"] == []


def test_camera_urls_are_sealed_at_rest(home: Path) -> None:
    """Issue 26: a camera's RTSP password was stored in clear with encryption at rest on."""
    key = base64.b64encode(os.urandom(32)).decode()
    url = "rtsp://viewer:s3cret-pw@10.1.2.3:554/stream1"
    with FaceSearch(Settings(home=home, encryption_key=key)) as fs:
        fs.cameras.add("door", url)
        with fs.store.transaction() as conn:
            stored = conn.execute(select(cameras_t.c.url)).scalar_one()
        assert stored.startswith("sealed:") and "s3cret" not in stored and "10.1.2.3" not in stored
        assert fs.cameras.get("door").url == url
        assert [c.url for c in fs.cameras.list_cameras()] == [url]
        # A sealed URL moved to another camera's row does not open (bound to the name).
        fs.cameras.add("back", "rtsp://10.9.9.9/x")
        with fs.store.transaction() as conn:
            conn.execute(update(cameras_t).where(cameras_t.c.name == "back").values(url=stored))
        with pytest.raises(EncryptionError):
            fs.cameras.get("back")
    with FaceSearch(Settings(home=home)) as fs, pytest.raises(EncryptionError):
        fs.cameras.get("door")  # without the key: refused, never a garbled URL
