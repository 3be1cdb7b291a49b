"""Shared fixtures: the real test photos in ../shared/testdata, a loaded pipeline, and the
databases a service keeps its data in: SQLite files in its data directory, or - for tests
marked ``databases``, which run once on each - a database of its own on a real PostgreSQL
server that the session starts (:mod:`tests.postgres`)."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share the cores: each runs its inference (ONNX Runtime, here and in the
    # servers the tests start) and FAISS's OpenMP on one thread instead of every core, so
    # they do not oversubscribe them. Set before anything loads OpenMP.
    os.environ.setdefault("FACESEARCH_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from facesearch.config import Settings  # noqa: E402
from facesearch.service import FaceSearch  # noqa: E402
from facesearch.vision.pipeline import Pipeline, load_pipeline  # noqa: E402

from .postgres import PostgresServer, binaries  # noqa: E402

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
    """The default pipeline, loaded once per test session (inference threads: the
    settings', ``FACESEARCH_THREADS``, else every core)."""
    settings = Settings()
    return load_pipeline(settings.pipeline, threads=settings.threads)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``databases`` that use the ``databases`` fixture (``fs`` does) run on
    SQLite and on PostgreSQL (that half marked ``slow``: the fast loop runs SQLite only)."""
    if ("databases" in metafunc.fixturenames
            and metafunc.definition.get_closest_marker("databases") is not None):
        metafunc.parametrize("databases", [
            "sqlite", pytest.param("postgresql", marks=pytest.mark.slow)], indirect=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session, started on first use. Without PostgreSQL
    installed the tests that need it fail in CI (``CI`` set) and are skipped elsewhere."""
    bindir = binaries()
    if bindir is None:
        message = "PostgreSQL is not installed (scripts/install-test-deps installs it)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    server = PostgresServer.start(bindir)
    yield server
    server.stop()


@dataclass(frozen=True)
class Databases:
    """Where a test's services keep their metadata and audit trail: SQLite files in the data
    directory (``server`` None), or one PostgreSQL database (``name``) for both."""

    dialect: str
    server: PostgresServer | None = None
    name: str | None = None

    @property
    def url(self) -> str | None:
        return None if self.server is None or self.name is None else self.server.url(self.name)

    def settings(self, secrets: Path) -> dict[str, object]:
        """Settings of a service on these databases; on PostgreSQL with the secrets every node
        of a shared database must share, in ``secrets`` (outside the data directory)."""
        if self.url is None:
            return {}
        return {"database_url": self.url, "audit_database_url": self.url,
                "audit_signing_key": secrets / "audit-ed25519.pem",
                "keys_master_key_file": secrets / "master.key"}

    def env(self, secrets: Path) -> dict[str, str]:
        """The same as ``FACESEARCH_*`` variables, for a service in another process."""
        return {f"FACESEARCH_{k.upper()}": str(v) for k, v in self.settings(secrets).items()}


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> Iterator[Databases]:
    """A new PostgreSQL database of the test's own (dropped after it)."""
    name = postgres_server.create_database()
    yield Databases("postgresql", postgres_server, name)
    postgres_server.drop_database(name)


@pytest.fixture
def databases(request: pytest.FixtureRequest) -> Databases:
    """SQLite, unless the test is marked ``databases`` (then each in turn)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return Databases("sqlite")
    pg: Databases = request.getfixturevalue("postgres")
    return pg


@pytest.fixture
def settings(home: Path, databases: Databases) -> Callable[..., Settings]:
    """Settings of a service on the test's data directory and databases (keywords add to or
    override them): what a test that opens services itself passes."""
    secrets = home.parent / "secrets"

    def make(**overrides: object) -> Settings:
        return Settings(**{"home": home, **databases.settings(secrets), **overrides})  # type: ignore[arg-type]

    return make


@pytest.fixture
def fs(home: Path, pipeline: Pipeline, databases: Databases) -> Iterator[FaceSearch]:
    """A service on a fresh data directory, sharing the session's pipeline, with its audit
    signing key outside the directory (as a law-enforcement deployment must keep it)."""
    secrets = home.parent / "secrets"
    settings = {"home": home, "audit_signing_key": secrets / "audit-ed25519.pem",
                **databases.settings(secrets)}
    service = FaceSearch(Settings(**settings), pipeline=pipeline)  # type: ignore[arg-type]
    yield service
    service.shutdown()
