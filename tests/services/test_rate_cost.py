"""The search rate limit counts faces searched, not requests (issue 26, low: one ``all_faces``
search of 38 faces cost one token; a video job one token per 1,000 vectors)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from facesearch.config import Settings
from facesearch.errors import ThrottledError
from facesearch.service import FaceSearch
from facesearch.types import Caller
from facesearch.vision.pipeline import Pipeline

from ..conftest import face

PHOTOS = ["obama.jpg", "biden.jpg", "lin-manuel-miranda.png", "alex-lacamoire.png"]


def mosaic(rows: int = 3) -> bytes:
    """A JPEG of ``rows`` x 4 portraits (one face each)."""
    cell = 320
    out = PILImage.new("RGB", (cell * len(PHOTOS), cell * rows), "white")
    for r in range(rows):
        for c, name in enumerate(PHOTOS):
            img = PILImage.open(face(name)).convert("RGB")
            img.thumbnail((cell, cell))
            out.paste(img, (c * cell, r * cell))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def test_an_all_faces_search_costs_a_token_per_face(tmp_path: Path, pipeline: Pipeline) -> None:
    caller = Caller(actor="FSAKRATECOST", role="searcher")
    probe = mosaic()
    with FaceSearch(Settings(home=tmp_path, searches_per_minute=1), pipeline=pipeline) as fs:
        fs.collections.create("rl")
        fs.collections.index_image("rl", face("obama2.jpg"))
        limiter = fs.search.limiter
        assert limiter is not None and limiter.burst == 60
        searched, faces = 0, 0
        with pytest.raises(ThrottledError):
            while searched < 60:  # before the fix: 60 such searches in the burst
                r = fs.search.by_image("rl", probe, all_faces=True, caller=caller)
                searched += 1
                faces = len(r.results)
        assert faces >= 10, faces  # the probe has ~12 faces, each searched
        # 60 tokens: admitted while one is left, each charged its faces.
        assert searched == -(-60 // faces), (searched, faces)


def test_a_vector_search_costs_a_token_per_vector(tmp_path: Path, pipeline: Pipeline) -> None:
    caller = Caller(actor="FSAKRATEVEC", role="searcher")
    with FaceSearch(Settings(home=tmp_path, searches_per_minute=1), pipeline=pipeline) as fs:
        fs.collections.create("rl")
        fs.collections.index_image("rl", face("obama2.jpg"))
        vectors = np.random.default_rng(1).normal(size=(100, 128)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        fs.search.by_vectors("rl", vectors, operation="search.stream", caller=caller)
        with pytest.raises(ThrottledError) as exc:  # 100 tokens spent of a 60-token burst
            fs.search.by_vectors("rl", vectors[:1], operation="search.stream", caller=caller)
        assert exc.value.retry_after >= 60 * 40  # the 41-token debt refills at 1 a minute
