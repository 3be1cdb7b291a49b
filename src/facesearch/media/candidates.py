"""Candidates as video job results and stream events carry them: :class:`VideoMatch` (a
collection face by its ids, with the similarity), built from the search gate's
:class:`~facesearch.services.search.Match`, and one person's best candidates over the
searches of several of its views."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from facesearch.services.search import Match


@dataclass(frozen=True)
class VideoMatch:
    """A collection face that a person of the video resembles (similarity 0-100)."""

    face_id: str
    external_id: str | None
    image_id: str | None
    user_id: str | None
    similarity: float


def video_match(m: Match) -> VideoMatch:
    """The gate's candidate as results and events carry it."""
    return VideoMatch(m.face.face_id, m.face.external_id, m.face.image.image_id, m.face.user_id,
                      float(m.similarity))


def best_matches(per_vector: Sequence[Sequence[Match]], max_results: int) -> list[Match]:
    """One person's candidates from the searches of its views: the best similarity per face,
    best first, at most ``max_results``."""
    best: dict[str, Match] = {}
    for ms in per_vector:
        for m in ms:
            prior = best.get(m.face.face_id)
            if prior is None or m.similarity > prior.similarity:
                best[m.face.face_id] = m
    return sorted(best.values(), key=lambda m: -m.similarity)[:max_results]
