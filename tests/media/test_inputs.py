"""Every FFmpeg input is opened through ``media.inputs.open_input``: container formats are
allow-listed, so a playlist (HLS, concat) that names files elsewhere on the server is refused
before any of them is read (issue 26, high: an uploaded ``.m3u8`` made a video job return the
people in ``file:///any/path.ts``), whatever the playlist file is called."""

from __future__ import annotations

from pathlib import Path

import pytest

from facesearch.errors import InvalidParameterError, InvalidVideoError
from facesearch.media.inputs import open_input
from facesearch.video.containers import FILE_REFUSED, allowed_formats, input_kind
from facesearch.video.frames import frame_at, iter_frames, probe

from .video_helpers import clip, hls, remux_segment

PLAYLISTS = [
    # (file name, what it holds)
    ("upload.m3u8", "hls-url"),
    ("upload.m3u8", "hls-path"),
    ("renamed.mp4", "hls-path"),  # the name does not decide the format: its content does
    ("list.ffconcat", "concat"),
    ("renamed.mkv", "concat"),
]


@pytest.fixture(scope="module")
def secret_segment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return remux_segment(tmp_path_factory.mktemp("elsewhere") / "secret.ts")


def playlist(folder: Path, name: str, kind: str, segment: Path) -> Path:
    text = {"hls-url": hls(segment, url=True), "hls-path": hls(segment, url=False),
            "concat": f"ffconcat version 1.0\nfile '{segment}'\n"}[kind]
    path = folder / name
    path.write_text(text)
    return path


def test_the_segment_itself_is_a_readable_video(secret_segment: Path) -> None:
    """The attack's payload is real: read directly, the segment is a video with frames (so
    the refusals below are of the playlist, not of a broken segment)."""
    assert probe(secret_segment).format == "mpegts"
    assert len(list(iter_frames(secret_segment))) > 30


@pytest.mark.parametrize(("name", "kind"), PLAYLISTS)
def test_playlists_are_refused_on_every_decode_path(tmp_path: Path, secret_segment: Path,
                                                    name: str, kind: str) -> None:
    path = playlist(tmp_path, name, kind, secret_segment)
    for read in (lambda: probe(path, "upload"), lambda: list(iter_frames(path, label="upload")),
                 lambda: frame_at(path, 500, label="upload")):
        with pytest.raises(InvalidVideoError) as err:
            read()
        assert err.value.message == f"upload: {FILE_REFUSED}"
        assert str(tmp_path) not in err.value.message and "secret" not in err.value.message
    with pytest.raises(InvalidVideoError):
        open_input(str(path))


@pytest.mark.parametrize("fmt", ["hls", "concat", "image2", "lavfi"])
def test_a_named_playlist_format_is_refused_for_files(tmp_path: Path, secret_segment: Path,
                                                      fmt: str) -> None:
    path = playlist(tmp_path, "x.m3u8", "hls-path", secret_segment)
    with pytest.raises(InvalidParameterError):
        open_input(str(path), fmt)


def test_allowed_containers_still_open(secret_segment: Path) -> None:
    with open_input(str(clip())) as c:
        assert "mp4" in c.format.name.split(",")
    with open_input(str(secret_segment)) as c:
        assert c.format.name == "mpegts"


def test_a_protocol_prefix_in_a_file_name_is_not_honoured(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A local name is opened as ``file:<absolute path>``: ``cache:`` at the start of a
    relative file name names the file, not FFmpeg's cache protocol."""
    (tmp_path / "cache:clip.mp4").write_bytes(clip().read_bytes())
    monkeypatch.chdir(tmp_path)
    with open_input("cache:clip.mp4") as c:
        assert c.streams.video[0].frames == 275


@pytest.mark.parametrize(("target", "fmt", "kind"), [
    ("/srv/video/a.mp4", None, "file"),
    ("rtsp://cam.example/stream", None, "rtsp"),
    ("https://cam.example/live.m3u8", "hls", "http"),
    ("/dev/video0", "v4l2", "device"),
])
def test_input_kinds_and_their_formats(target: str, fmt: str | None, kind: str) -> None:
    assert input_kind(target, fmt) == kind
    formats = allowed_formats(kind)
    assert ("hls" in formats) == (kind in ("rtsp", "http"))
    assert "concat" not in formats
