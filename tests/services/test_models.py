"""The one model provider (:class:`facesearch.services.models.Models`) and the one place
that wires services (:class:`facesearch.service.FaceSearch`): every service shares the
provider; the HTTP API's settings reach the video jobs and stream processors at construction."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from facesearch.config import Settings
from facesearch.governance.calibration import Calibration, find_calibration
from facesearch.media.sns import PUBLISH_FAILED
from facesearch.service import FaceSearch
from facesearch.services.models import Models
from facesearch.vision.pipeline import Pipeline


def test_the_version_is_known_without_loading_the_models(pipeline: Pipeline) -> None:
    models = Models(Settings())
    assert models.version == pipeline.model_version  # the session's: the default settings
    assert models.calibration() is not None
    assert not models.loaded and models.loaded_version() is None
    dlib = Models(Settings(pipeline="dlib"))
    assert dlib.version.startswith("dlib-hog") and not dlib.loaded


def test_a_given_pipeline_is_the_loaded_one(pipeline: Pipeline) -> None:
    models = Models(Settings(embedder="dlib-resnet"), pipeline=pipeline)
    assert models.loaded and models.pipeline is pipeline
    assert models.version == models.loaded_version() == pipeline.model_version  # not declared


def test_the_pipeline_loads_once_whoever_asks_first() -> None:
    models = Models(Settings(detector_model="short", min_face=0))
    got: list[Pipeline] = []
    start = threading.Barrier(4)

    def ask() -> None:
        start.wait()
        got.append(models.pipeline)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(p is got[0] for p in got)
    assert models.loaded and models.loaded_version() == got[0].model_version == models.version


def test_a_calibration_is_read_once() -> None:
    asked: list[str] = []

    def find(version: str) -> Calibration | None:
        asked.append(version)
        return find_calibration(version)

    models = Models(Settings(), calibrations=find)
    first = models.calibration()
    assert first is not None and models.calibration(models.version) is first
    assert models.calibration("no-such/model") is None
    assert models.calibration("no-such/model") is None
    assert asked == [models.version, "no-such/model"]


def test_every_service_shares_the_provider(home: Path, pipeline: Pipeline) -> None:
    with FaceSearch(Settings(home=home), pipeline=pipeline) as fs:
        assert fs.collections.models is fs.models and fs.search.models is fs.models
        assert fs.users.models is fs.models and fs.pipeline is pipeline
        fs.collections.create("c")
        records, _ = fs.audit.query(operation="collection.create", limit=10)
        assert records[0].event.model_version == pipeline.model_version
        assert fs.calibration() is fs.models.calibration(pipeline.model_version)


def test_audit_events_name_no_model_until_it_is_loaded(home: Path) -> None:
    with FaceSearch(Settings(home=home)) as fs:
        fs.collections.create("c")  # stored with the declared version, nothing loaded
        assert not fs.models.loaded
        assert fs.collections.describe("c").model_version == fs.models.version
        records, _ = fs.audit.query(operation="collection.create", limit=10)
        assert records[0].event.model_version is None


def _api(roots: Path) -> dict[str, object]:
    return {"video": {"path_roots": str(roots), "allow_devices": False},
            "sns": {"endpoint_url": "http://127.0.0.1:9", "access_key_id": "k",
                    "secret_access_key": "s"},
            "kinesis": {"endpoint_url": "http://127.0.0.1:9", "region": "eu-west-1",
                        "access_key_id": "k", "secret_access_key": "s"}}


def test_a_server_builds_its_services_from_the_api_settings(home: Path, tmp_path: Path,
                                                             pipeline: Pipeline) -> None:
    roots = tmp_path / "videos"
    roots.mkdir()
    fs = FaceSearch(Settings(home=home, api=_api(roots)), pipeline=pipeline, serving=True)
    try:
        assert fs.video.path_roots == [roots.resolve()]
        assert fs.video.sns is not None and fs.video.sns.endpoint.url == "http://127.0.0.1:9"
        assert fs.streams.allow_devices is False
        assert fs.streams.kinesis is not None
        assert fs.streams.kinesis.endpoint.region == "eu-west-1"
        sns = fs.video.sns
    finally:
        fs.shutdown()
    # FaceSearch owns the outputs: shut down with it (a publish now fails at once, unsent).
    assert sns.publish("arn:aws:sns:us-east-1:000000000000:t", {"x": 1}) == PUBLISH_FAILED


def test_elsewhere_paths_and_cameras_are_the_operators(home: Path, tmp_path: Path,
                                                       pipeline: Pipeline) -> None:
    """The CLI and the library: the API's settings do not apply (as before one Settings)."""
    with FaceSearch(Settings(home=home, api=_api(tmp_path)), pipeline=pipeline) as fs:
        assert fs.video.path_roots is None and fs.video.sns is None
        assert fs.streams.allow_devices is True and fs.streams.kinesis is None


@pytest.mark.parametrize("allow", [True, False])
def test_a_server_allows_cameras_only_when_set(home: Path, pipeline: Pipeline,
                                               allow: bool) -> None:
    api = {"video": {"allow_devices": allow}}
    with FaceSearch(Settings(home=home, api=api), pipeline=pipeline, serving=True) as fs:
        assert fs.streams.allow_devices is allow
        assert fs.video.path_roots == []  # no roots set: every server path refused
        assert fs.video.sns is None and fs.streams.kinesis is None
