"""Re-embed a collection made with another model, from the source files of its images.

Face ids, external ids and users stay; only boxes, landmarks, quality and vectors change.
A face is found again in its source image by box overlap (IoU >= 0.3). Vectors of two models
are never mixed: the collection switches model in one transaction, and its vector index is
rebuilt from the database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from facesearch.errors import ConflictError, FaceSearchError
from facesearch.services.collection import FaceCollections
from facesearch.services.enrolment import quality_dict
from facesearch.storage.records import FaceRecord, NewFace
from facesearch.types import Caller, Faces
from facesearch.vision.decode import load_image, read_bytes

MIN_IOU = 0.3
"""Box overlap at which a stored face is taken to be found again in its source image."""


@dataclass(frozen=True)
class ReembedReport:
    """What re-embedding a collection with the current model did (or would have to skip)."""

    collection: str
    old_model: str
    new_model: str
    faces_reembedded: int
    missing: list[tuple[str, str]]
    """(face id, why) for faces that could not be re-embedded: source file gone or changed,
    or the face no longer found in it."""
    dropped: int


def reembed(collections: FaceCollections, name: str, *, drop_missing: bool = False,
            caller: Caller | None = None) -> ReembedReport:
    """Re-embed collection ``name`` with the running model (see the module's docstring).

    Faces whose source is gone or changed, or that are not found again, are listed in the
    report; then nothing changes (ConflictError), unless ``drop_missing``, which erases them.
    """
    store = collections.store
    with store.transaction() as conn:
        coll = store.collections.get(conn, name)
        images = store.images.of_collection(conn, coll.id)
        old_faces = {im.id: store.faces.of_image(conn, im.id) for im in images}
    old_model, new_model = coll.model_version, collections.model_version
    updates: list[tuple[FaceRecord, Faces, int]] = []
    missing: list[tuple[str, str]] = []
    for im in images:
        faces = old_faces[im.id]
        if not faces:
            continue
        why = None
        if not im.source:
            why = "indexed from bytes: no source file recorded"
        else:
            try:
                data = read_bytes(im.source, collections.limits)
            except FaceSearchError as exc:
                why = f"source unreadable: {exc.message}"
            else:
                if hashlib.sha256(data).hexdigest() != im.sha256:
                    why = "source file changed since it was indexed"
        if why is not None:
            missing += [(f.face_id, why) for f in faces]
            continue
        new = collections.analyze(load_image(data, collections.limits))
        taken: set[int] = set()
        for f in faces:
            best = max(((_iou(f.box, new.boxes[j]), j) for j in range(len(new))
                        if j not in taken), default=(0.0, -1))
            if best[0] < MIN_IOU:
                missing.append((f.face_id, "face not found again in its source image"))
                continue
            taken.add(best[1])
            updates.append((f, new, best[1]))
    if missing and not drop_missing:
        raise ConflictError(
            f"{len(missing)} face(s) of {name!r} cannot be re-embedded (first: "
            f"{missing[0][0]}: {missing[0][1]}); nothing changed. Re-index them, or "
            "re-embed with drop_missing to erase them")
    with store.transaction() as conn:
        collection_id = store.collections.get(conn, name).id
    with collections.indexes.locked(collection_id):
        with store.transaction() as conn:
            coll = store.collections.get(conn, name)
            for f, new, j in updates:
                assert new.embeddings is not None
                store.faces.update_model(conn, f.row, NewFace(
                    face_id=f.face_id, external_id=f.external_id,
                    box=tuple(float(v) for v in new.boxes[j]),  # type: ignore[arg-type]
                    landmarks=new.landmarks[j].round(2).tolist(), score=float(new.scores[j]),
                    quality=quality_dict(new, j), embedding=new.embeddings[j]), new_model)
            if missing:
                gone = store.faces.by_face_ids(conn, coll.id, [m[0] for m in missing])
                store.faces.delete(conn, [r.row for r in gone.values()])
                store.images.delete_orphans(conn, coll.id)
            store.collections.set_model(conn, coll.id, new_model)
        # Same ids, new vectors: the index is rebuilt from the database, not reconciled.
        collections.indexes.drop(coll.id)
        store.checkpoint()
    report = ReembedReport(name, old_model, new_model, len(updates), missing,
                           len(missing) if drop_missing else 0)
    collections.trail.note("collection.reembed", caller, collection=name,
                           details={"old_model": old_model, "new_model": new_model,
                                    "faces": len(updates), "dropped": report.dropped})
    return report


def _iou(a: tuple[float, float, float, float], b: np.ndarray) -> float:
    w = max(0.0, min(a[2], float(b[2])) - max(a[0], float(b[0])))
    h = max(0.0, min(a[3], float(b[3])) - max(a[1], float(b[1])))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + float((b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0
