"""Shared fixtures: the real test photos in ../shared/testdata and a loaded pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearch
from facesearch.vision.pipeline import Pipeline, load_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTDATA = REPO_ROOT.parent / "shared" / "testdata"
FACES = TESTDATA / "faces"
LFW = TESTDATA / "lfw-dev"


def face(name: str) -> Path:
    """Path of a photo in ../shared/testdata/faces; fails (never skips) when it is missing."""
    path = FACES / name
    if not path.is_file():
        pytest.fail(f"test data missing: {path} (expected <repo root>/../shared/testdata)",
                    pytrace=False)
    return path


@pytest.fixture(scope="session")
def pipeline() -> Pipeline:
    """The default pipeline, loaded once per test session."""
    return load_pipeline(Settings().pipeline)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def fs(home: Path, pipeline: Pipeline) -> Iterator[FaceSearch]:
    """A service on a fresh data directory, sharing the session's pipeline, with its audit
    signing key outside the directory (as a law-enforcement deployment must keep it)."""
    key = home.parent / "secrets" / "audit-ed25519.pem"
    service = FaceSearch(Settings(home=home, audit_signing_key=key), pipeline=pipeline)
    yield service
    service.shutdown()
