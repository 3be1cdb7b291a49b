"""Stream snapshots on disk and their removal when the faces they matched are erased.

A stream processor with snapshots on saves the crop of each match as
``<home>/snapshots/<processor>/<day>/<event id>_<matched face id>.jpg`` (``.jpg.fse`` when
sealed: :mod:`facesearch.media.events`). Files are not rows: an erasure removes them after its
transaction commits, and says which it could not remove."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("facesearch.erasure")


@dataclass(frozen=True)
class SnapshotRemoval:
    """What removing the snapshots of erased faces did: how many files went, and those that
    could not be removed (path and why)."""

    removed: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)


def remove_snapshots(root: Path, face_ids: Sequence[str]) -> SnapshotRemoval:
    """Delete every snapshot under ``root`` (``<home>/snapshots``) of a match to one of
    ``face_ids``; a file that cannot be deleted is logged and listed, the others still go."""
    if not face_ids or not root.is_dir():
        return SnapshotRemoval()
    wanted = set(face_ids)
    removed = 0
    failed: list[tuple[Path, str]] = []
    for path in root.glob("*/*/*_*.jpg*"):
        if path.name.split(".", 1)[0].rsplit("_", 1)[-1] not in wanted:
            continue
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("cannot remove the snapshot %s of an erased face: %s", path,
                      exc.strerror or exc)
            failed.append((path, exc.strerror or str(exc)))
        else:
            removed += 1
    return SnapshotRemoval(removed, failed)
