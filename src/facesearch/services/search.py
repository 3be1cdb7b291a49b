"""The one search gate: every 1:N search, whatever asks for it, passes here.

Image search, face-id search, vector searches of video jobs and stream processors, and the
user searches of :mod:`facesearch.services.users` all go through :class:`SearchGate`, in one
order:

1. :meth:`SearchGate.admit`: validate the request; for a search made on behalf of whoever
   created a video job or a stream processor (a :class:`Delegation`), check that the
   creator's access key may still act (:class:`~facesearch.errors.DelegationEndedError`
   otherwise, before anything else); look the collection up, check that its
   vectors are of the running model, apply its policy (purpose and case, threshold floor,
   result cap) and the caller's rate limit. Nothing about the probe has been decoded yet. A
   refusal is recorded (``search.refused``, with the probe's SHA-256 when there is a probe,
   hashed from its bytes, never decoded) and raised.
2. the probe is analysed (image searches), and the faces to search go through the quality
   filter before any vector is searched (a probe that fails it is refused as above);
3. :meth:`SearchGate.candidates`: the vector index and the metadata of the candidates at or
   above the threshold;
4. :meth:`SearchGate.record_search`: one audit record of the search, with the candidates returned.

The gate also decides every threshold: :meth:`SearchGate.threshold` is the one a search of a
collection uses when the caller gives none (the larger of the model's default and the
policy's floor), :meth:`SearchGate.user_match_threshold` the one a face must reach to join a
user.

Every result carries its ``search_id`` (the audit record's, for reviews), the threshold used
and what that threshold means for this collection (:class:`ThresholdRisk`: false-match rate,
expected false-positive identification rate at the collection's size), computed once here.
Candidates are leads for human review, never identifications.

One module of ~570 lines on purpose: it is the one place every search is decided, read from
top to bottom in the order above.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from facesearch import limits
from facesearch.errors import (
    DelegationEndedError,
    FaceNotFoundError,
    FaceSearchError,
    InvalidParameterError,
    ModelMismatchError,
    NoFaceError,
    ProbeQualityError,
    ThrottledError,
)
from facesearch.governance.bands import quality_band
from facesearch.governance.calibration import ThresholdRisk
from facesearch.governance.keys import AccessKeys
from facesearch.governance.policy import SearchLimiter, check_search, of_collection
from facesearch.governance.trail import AuditTrail, Details
from facesearch.services.models import Models
from facesearch.storage.records import CollectionRow, FaceRecord
from facesearch.storage.store import Store
from facesearch.storage.vectors import VectorBackend
from facesearch.types import EMBEDDING_DIM, Caller, Faces, FloatArray, Image, QualityFilter
from facesearch.vision import similarity as sim
from facesearch.vision.decode import (
    DEFAULT_LIMITS,
    DecodeLimits,
    ImageSource,
    load_image,
    read_bytes,
)
from facesearch.vision.quality import reasons as quality_reasons

REVIEW_LABEL = "candidates for human review, not identifications"

DEFAULT_USER_MATCH_THRESHOLD = 75.0
"""The similarity (0-100) a face must reach against a user's faces to join it, when the
caller gives none (Rekognition's ``UserMatchThreshold`` default)."""


POOR_BANDS = frozenset({"low", "unrecognisable"})
"""Quality bands (:data:`facesearch.governance.bands.BANDS`) that a search warns about:
a probe, or a candidate's enrolled face, in one of them."""


@dataclass(frozen=True)
class Match:
    """A candidate: a stored face and its similarity (0-100) to the probe."""

    face: FaceRecord
    similarity: float

    @property
    def enrolled_quality_band(self) -> str | None:
        """The quality band of the stored face (from its recognisability; None for faces
        indexed before recognisability was measured)."""
        band = quality_band(self.face.quality.get("recognisability"))
        return None if band is None else band.name

    @property
    def enrolled_poor_quality(self) -> bool:
        """Whether the stored face is of poor quality (band ``low`` or ``unrecognisable``):
        a lead from it is weaker than its similarity suggests."""
        return self.enrolled_quality_band in POOR_BANDS


@dataclass(frozen=True)
class ProbeResult:
    """Candidates for one probe face (``face_index`` into ``SearchResult.faces``; for vector
    and face-id searches, the index of the query vector)."""

    face_index: int
    matches: list[Match]


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    """Candidates for a search: leads for human review, never identifications.

    ``faces`` are the probe image's searched faces, largest first (empty for vector and
    face-id searches), ``results[i]`` the candidates of ``faces[i]``; ``unsearched`` the probe's
    other faces and ``unsearched_reasons`` why each was not searched (``FACE_NOT_LARGEST``,
    ``FACE_NOT_SELECTED``, or the quality filter's reasons); ``risk`` what ``threshold`` means
    for a collection of ``collection_size`` faces (None without a calibration of the model),
    from the calibration of the probe's quality band (``risk.quality_band``) where the probe's
    recognisability is known; ``warnings`` what a reviewer must know about the probe's
    quality and the candidates' enrolled faces.
    """

    search_id: str
    collection: str
    threshold: float
    model_version: str
    collection_size: int
    risk: ThresholdRisk | None
    results: list[ProbeResult]
    faces: Faces = field(default_factory=Faces.empty)
    unsearched: Faces = field(default_factory=Faces.empty)
    unsearched_reasons: list[list[str]] = field(default_factory=list)
    width: int = 0
    height: int = 0
    probe_sha256: str | None = None
    label: str = REVIEW_LABEL
    warnings: list[str] = field(default_factory=list)

    @property
    def matches(self) -> list[Match]:
        """The candidates of the first (or only) probe."""
        return self.results[0].matches if self.results else []


@dataclass(frozen=True)
class Comparison:
    """1:1 comparison: the source image's largest face against each face in the target."""

    similarity: float
    """The best similarity over the target's faces (0-100)."""
    match: bool
    threshold: float
    source: Faces
    target: Faces
    similarities: list[float] = field(default_factory=list)
    source_size: tuple[int, int] = (0, 0)
    target_size: tuple[int, int] = (0, 0)
    risk: ThresholdRisk | None = None


@dataclass(frozen=True)
class Delegation:
    """A search made later on behalf of ``creator``, who created the video job or stream
    processor that makes it: the gate lets it through only while the creator's access key
    may act (not revoked, expired or deleted; callers that are not access keys always may)."""

    creator: Caller


@dataclass(frozen=True)
class Admission:
    """A search the gate let through: the collection, the threshold to use (the default or
    the policy's floor when none was given), and what it means."""

    collection: CollectionRow
    caller: Caller
    threshold: float
    max_results: int
    operation: str
    search_id: str
    size: int
    risk: ThresholdRisk | None
    rate_limited: bool = False
    """Whether the caller's rate limit applies (charged per probe face or vector)."""


def require_model(coll: CollectionRow, model_version: str) -> None:
    """Refuse a collection whose vectors another model made: vectors are never mixed."""
    if coll.model_version != model_version:
        raise ModelMismatchError(
            f"collection {coll.name!r} holds vectors of model {coll.model_version!r}, but "
            f"this server runs {model_version!r}; search or index it with that model, or "
            f"re-embed it (facesearch collection reembed)")


class SearchGate:
    """Searches of one data directory's collections (see the module's docstring)."""

    def __init__(self, store: Store, indexes: VectorBackend, trail: AuditTrail,
                 models: Models, *, limiter: SearchLimiter | None = None,
                 limits: DecodeLimits = DEFAULT_LIMITS, keys: AccessKeys | None = None) -> None:
        self.store = store
        self.keys = keys
        """The access keys whose delegations the gate checks (None: every key may act)."""
        self.indexes = indexes
        self.trail = trail
        self.models = models
        """The pipeline, model version and calibrations (:class:`Models`)."""
        self.limiter = limiter
        self.limits = limits

    # -- the steps ---------------------------------------------------------------------------

    def admit(self, collection: str, *, operation: str, caller: Caller | None = None,
              threshold: float | None = None, max_results: int = limits.DEFAULT_MAX_RESULTS,
              probe: ImageSource | Image | None = None, rate_limit: bool = True,
              delegation: Delegation | None = None) -> Admission:
        """Step 1: let a search through or refuse it (audited), before any image work.

        ``rate_limit=False`` for searches whose volume was admitted once already (a video
        job's batches, a stream processor's frames); the system's own work and local use (the
        CLI, the library) are never rate limited. With a ``delegation`` the search is made on
        behalf of its creator (``caller`` is not given), refused first with
        :class:`DelegationEndedError` when the creator's key may no longer act.
        """
        if delegation is not None:
            self.check_delegation(delegation)
            caller = delegation.creator
        caller = caller or Caller.local()
        limits.count(max_results)
        limits.threshold(threshold)
        with self.store.transaction() as conn:
            coll = self.store.collections.get(conn, collection)
            size = self.store.generations.face_count(conn, coll)
        require_model(coll, self.models.version)
        cal = self.models.calibration(coll.model_version)
        limited = (rate_limit and self.limiter is not None and caller.role != "system"
                   and not caller.actor.startswith("local:"))
        try:
            used = check_search(of_collection(coll.settings, cal)[1], caller, threshold,
                                max_results, sim.DEFAULT_THRESHOLD)
            if limited and self.limiter is not None:
                self.limiter.acquire(caller.actor)
        except (InvalidParameterError, ThrottledError) as exc:
            self.refused(collection, caller, operation, exc.message, threshold=threshold,
                         max_results=max_results, probe=probe)
            raise
        risk = None if cal is None else cal.risk(used, max(size, 1))
        return Admission(coll, caller, used, max_results, operation, str(uuid.uuid4()), size,
                         risk, limited)

    def check_delegation(self, delegation: Delegation) -> None:
        """:class:`DelegationEndedError` (its ``reason``: why) when the creator's access key
        may no longer act: revoked, expired or deleted. Not audited: the job or processor
        that holds the delegation records why it stopped."""
        problem = None if self.keys is None else self.keys.problem(delegation.creator.actor)
        if problem is not None:
            raise DelegationEndedError(problem)

    def threshold(self, collection: str, threshold: float | None = None) -> float:
        """The threshold (0-100) a search of ``collection`` uses: ``threshold`` when given,
        else the collection's default: the larger of the model's default
        (:data:`facesearch.vision.similarity.DEFAULT_THRESHOLD`) and its policy's floor.
        A given threshold below the floor is not raised here; :meth:`admit` refuses it."""
        if threshold is not None:
            limits.threshold(threshold)
            return float(threshold)
        with self.store.transaction() as conn:
            coll = self.store.collections.get(conn, collection)
        policy = of_collection(coll.settings, self.models.calibration(coll.model_version))[1]
        return float(max(sim.DEFAULT_THRESHOLD, policy.threshold_floor))

    @staticmethod
    def user_match_threshold(threshold: float | None = None) -> float:
        """The similarity (0-100) a face must reach against a user's faces to join it:
        ``threshold`` when given, else :data:`DEFAULT_USER_MATCH_THRESHOLD`."""
        return DEFAULT_USER_MATCH_THRESHOLD if threshold is None else float(threshold)

    def charge(self, adm: Admission, probes: int) -> None:
        """The rest of a search's cost: one token per probe face or query vector beyond the
        one :meth:`admit` took (:meth:`SearchLimiter.charge`)."""
        if adm.rate_limited and self.limiter is not None and probes > 1:
            self.limiter.charge(adm.caller.actor, probes - 1)

    def refused(self, collection: str, caller: Caller, operation: str, reason: str, *,
                threshold: float | None = None, max_results: int | None = None,
                probe: ImageSource | Image | None = None) -> None:
        """Record a refused search (with the probe's SHA-256 where there is a probe)."""
        self.trail.note("search.refused", caller, collection=collection, threshold=threshold,
                        probe_sha256=self._probe_sha256(probe),
                        details={"reason": reason, "max_results": max_results,
                                 "operation": operation})

    def _probe_sha256(self, probe: ImageSource | Image | None) -> str | None:
        if probe is None:
            return None
        if isinstance(probe, Image):
            return probe.sha256
        if isinstance(probe, np.ndarray):
            return None
        if isinstance(probe, (bytes, bytearray, memoryview)):
            return hashlib.sha256(probe).hexdigest()
        try:
            return hashlib.sha256(read_bytes(probe, self.limits)).hexdigest()
        except FaceSearchError:
            return None

    def candidates(self, adm: Admission, vectors: FloatArray,
                   exclude: Sequence[str] = ()) -> list[list[Match]]:
        """Step 3: candidates for each query vector, best first, at or above the threshold,
        at most ``max_results`` each (the faces in ``exclude`` left out)."""
        index = self.indexes.get(adm.collection)
        out: list[list[Match]] = []
        with self.store.transaction() as conn:
            sims, rows = index.search(  # scored exactly, on the store's vectors
                vectors, adm.max_results + len(exclude),
                exact=lambda ids: self.store.faces.embeddings(conn, ids, EMBEDDING_DIM))
            scores = sim.to_similarity(sims, adm.collection.model_version)
            for s, r in zip(scores, rows, strict=True):
                keep = [(float(a), int(b)) for a, b in zip(s, r, strict=True)
                        if b >= 0 and a >= adm.threshold]
                found = self.store.faces.by_rows(conn, [b for _, b in keep])
                ms = [Match(found[b], a) for a, b in keep
                      if b in found and found[b].face_id not in exclude]
                out.append(ms[:adm.max_results])
        return out

    def record_search(self, adm: Admission, results: Sequence[tuple[str, float]], *,
                      probe_sha256: str | None = None, details: Details | None = None) -> None:
        """Step 4: the one audit record of an admitted search."""
        self.trail.note(adm.operation, adm.caller, collection=adm.collection.name,
                        probe_sha256=probe_sha256, threshold=adm.threshold,
                        results=[(f, round(s, 4)) for f, s in results],
                        details={"search_id": adm.search_id, "max_results": adm.max_results,
                                 **(details or {})})

    def _result(self, adm: Admission, per_probe: list[list[Match]], *,
                warnings: list[str] | None = None) -> SearchResult:
        """The result of a vector or face-id search (no probe image)."""
        return SearchResult(search_id=adm.search_id, collection=adm.collection.name,
                            threshold=adm.threshold,
                            model_version=adm.collection.model_version,
                            collection_size=adm.size, risk=adm.risk,
                            results=[ProbeResult(i, m) for i, m in enumerate(per_probe)],
                            warnings=warnings or [])

    # -- the searches --------------------------------------------------------------------------

    def by_image(self, collection: str, source: ImageSource | Image, *,
                 max_results: int = limits.DEFAULT_MAX_RESULTS, threshold: float | None = None,
                 all_faces: bool = False, quality_filter: QualityFilter = QualityFilter.NONE,
                 face_index: int | None = None, caller: Caller | None = None) -> SearchResult:
        """Search the probe's largest face (or every face, or only face ``face_index`` of
        its detections, largest first, as :meth:`FaceCollections.detect_faces` lists them)
        against the collection.

        With a ``quality_filter``, only probe faces that pass it are searched; when the
        chosen one (the largest, unless ``all_faces`` or ``face_index``) or every one fails,
        the search is refused.
        """
        adm = self.admit(collection, operation="search.image", caller=caller,
                         threshold=threshold, max_results=max_results, probe=source)
        image = source if isinstance(source, Image) else load_image(source, self.limits)
        pipeline = self.models.pipeline
        faces = pipeline.detect(image, need=None if all_faces else 1)
        if not len(faces):
            raise NoFaceError("no face was found in the probe image")
        searched, why = self._select(adm, image, faces, all_faces, quality_filter, face_index)
        self.charge(adm, len(searched))
        probes = pipeline.embed(image, faces[searched])
        assert probes.embeddings is not None and probes.quality is not None
        adm, warnings = self.probe_quality(adm, image, probes.quality.recognisability)
        per_face = self.candidates(adm, probes.embeddings)
        warnings += self._candidate_warnings(per_face)
        risk = adm.risk
        self.record_search(adm, [(m.face.face_id, m.similarity) for ms in per_face for m in ms],
                           probe_sha256=image.sha256,
                           details={"probes": len(searched),
                                    "quality_band": risk.quality_band if risk else None,
                                    "recognisability": risk.recognisability if risk else None,
                                    "warnings": " | ".join(warnings) or None})
        others = [i for i in range(len(faces)) if why[i]]
        return SearchResult(
            search_id=adm.search_id, collection=collection, threshold=adm.threshold,
            model_version=adm.collection.model_version, collection_size=adm.size,
            risk=adm.risk, results=[ProbeResult(i, ms) for i, ms in enumerate(per_face)],
            faces=probes, unsearched=faces[others],
            unsearched_reasons=[why[i] for i in others], width=image.width,
            height=image.height, probe_sha256=image.sha256, warnings=warnings)

    def probe_quality(self, adm: Admission, image: Image | None,
                       recognisability: FloatArray) -> tuple[Admission, list[str]]:
        """The probe's quality against the policy: refuse (audited) a probe face less
        recognisable than the collection's floor; otherwise the admission with the risk of
        the probe's quality band (the worst of its faces) and the warnings to show."""
        known = recognisability[np.isfinite(recognisability)]
        if not len(known):
            return adm, []
        worst = float(known.min())
        cal = self.models.calibration(adm.collection.model_version)
        policy = of_collection(adm.collection.settings, cal)[1]
        band = quality_band(worst)
        assert band is not None
        if worst < policy.min_probe_recognisability:
            reason = (f"the probe face's recognisability {worst:.0f} is below this "
                      f"collection's floor of {policy.min_probe_recognisability:g} (quality "
                      f"band {band.name}): a search with it would give leads no one should "
                      f"act on; use a better photo")
            self.refused(adm.collection.name, adm.caller, adm.operation, reason,
                         threshold=adm.threshold, max_results=adm.max_results, probe=image)
            raise ProbeQualityError(reason)
        warnings = []
        if band.name in POOR_BANDS:
            warnings.append(
                f"poor probe: recognisability {worst:.0f} (quality band {band.name}); "
                f"candidates from such probes are often strangers, and the stated risk is "
                f"that measured on degraded photos")
        if band.name == "unrecognisable":
            warnings.append(
                "the stated FPIR assumes independent comparisons, which an unrecognisable "
                "probe breaks (it resembles every other poor face): on lfw-dev such probes "
                "found a stranger more often than stated; treat any candidate as unsupported")
        risk = adm.risk
        bands = self.models.bands(adm.collection.model_version)
        if cal is not None:
            risk = (bands.risk(cal, adm.threshold, max(adm.size, 1), worst) if bands
                    else replace(cal.risk(adm.threshold, max(adm.size, 1)),
                                 quality_band=band.name, recognisability=round(worst, 1)))
        return replace(adm, risk=risk), warnings

    @staticmethod
    def _candidate_warnings(per_face: list[list[Match]]) -> list[str]:
        poor = sum(m.enrolled_poor_quality for ms in per_face for m in ms)
        if not poor:
            return []
        return [f"{poor} candidate(s) come from enrolled faces of poor quality (quality band "
                f"low or unrecognisable): their similarity overstates the evidence"]

    def _select(self, adm: Admission, image: Image, faces: Faces, all_faces: bool,
                quality_filter: QualityFilter, face_index: int | None = None
                ) -> tuple[list[int], list[list[str]]]:
        """Step 2: which probe faces to search (largest first), and why each other is not."""
        why = quality_reasons(faces, quality_filter)
        chosen = 0
        if face_index is not None:
            if not 0 <= face_index < len(faces):
                reason = (f"face {face_index} was asked for, but the probe has "
                          f"{len(faces)} face(s) (numbered from 0, largest first)")
                self.refused(adm.collection.name, adm.caller, adm.operation, reason,
                             threshold=adm.threshold, max_results=adm.max_results, probe=image)
                raise InvalidParameterError(reason)
            chosen = face_index
            for i in range(len(faces)):
                if i != face_index:
                    why[i] = ["FACE_NOT_SELECTED"]
        elif not all_faces:
            for i in range(1, len(faces)):
                why[i] = ["FACE_NOT_LARGEST"]
        searched = [i for i in range(len(faces)) if not why[i]]
        if not searched:
            what = ("faces do" if all_faces and face_index is None
                    else "chosen face does" if face_index is not None else "largest face does")
            reason = (f"the probe's {what} not pass the {quality_filter.value} quality filter "
                      f"({', '.join(why[chosen])})")
            self.refused(adm.collection.name, adm.caller, adm.operation, reason,
                         threshold=adm.threshold, max_results=adm.max_results, probe=image)
            raise InvalidParameterError(reason)
        return searched, why

    def by_face_id(self, collection: str, face_id: str, *,
                   max_results: int = limits.DEFAULT_MAX_RESULTS,
                   threshold: float | None = None, caller: Caller | None = None
                   ) -> SearchResult:
        """Candidates for a stored face (the face itself left out)."""
        adm = self.admit(collection, operation="search.face", caller=caller,
                         threshold=threshold, max_results=max_results)
        record, vector = self.face_record(collection, face_id)
        adm, warnings = self.probe_quality(
            adm, None, np.array([record.quality.get("recognisability", np.nan)], np.float32))
        per = self.candidates(adm, vector, exclude=[face_id])
        warnings += self._candidate_warnings(per)
        self.record_search(adm, [(m.face.face_id, m.similarity) for m in per[0]],
                           details={"face_id": face_id, "probes": 1,
                                    "quality_band": adm.risk.quality_band if adm.risk else None,
                                    "warnings": " | ".join(warnings) or None})
        return self._result(adm, per, warnings=warnings)

    def by_vectors(self, collection: str, vectors: FloatArray, *, operation: str,
                   max_results: int = limits.DEFAULT_MAX_RESULTS,
                   threshold: float | None = None, caller: Caller | None = None,
                   search_id: str | None = None, rate_limit: bool = True,
                   delegation: Delegation | None = None) -> SearchResult:
        """Candidates for query vectors already embedded with the collection's model (video
        jobs, stream processors, on behalf of their creator: ``delegation``): one admission
        and one audit record for all of them."""
        adm = self.admit(collection, operation=operation, caller=caller, threshold=threshold,
                         max_results=max_results, rate_limit=rate_limit,
                         delegation=delegation)
        if search_id is not None:
            adm = Admission(adm.collection, adm.caller, adm.threshold, adm.max_results,
                            adm.operation, search_id, adm.size, adm.risk, adm.rate_limited)
        self.charge(adm, len(vectors))
        per = self.candidates(adm, vectors)
        self.record_search(adm, [(m.face.face_id, m.similarity) for ms in per for m in ms],
                           details={"probes": len(per)})
        return self._result(adm, per)

    def face_vector(self, collection: str, face_id: str) -> FloatArray:
        """The stored vector ``(1, 128)`` of a face."""
        return self.face_record(collection, face_id)[1]

    def face_record(self, collection: str, face_id: str) -> tuple[FaceRecord, FloatArray]:
        """A stored face and its vector ``(1, 128)``."""
        limits.face_id(face_id)
        with self.store.transaction() as conn:
            coll = self.store.collections.get(conn, collection)
            found = self.store.faces.by_face_ids(conn, coll.id, [face_id])
            if face_id not in found:
                raise FaceNotFoundError(f"face {face_id} is not in collection {collection!r}")
            rec = found[face_id]
            return rec, self.store.faces.embeddings(conn, np.array([rec.row]), EMBEDDING_DIM)

    def compare(self, source: ImageSource | Image, target: ImageSource | Image, *,
                threshold: float | None = None,
                quality_filter: QualityFilter = QualityFilter.NONE,
                caller: Caller | None = None) -> Comparison:
        """1:1: the source's largest face against every face of the target. With a
        ``quality_filter``, a source face that fails it is refused before comparing."""
        used = limits.threshold(threshold)
        used = sim.DEFAULT_THRESHOLD if used is None else used
        a = source if isinstance(source, Image) else load_image(source, self.limits)
        b = target if isinstance(target, Image) else load_image(target, self.limits)
        pipeline = self.models.pipeline
        fa = pipeline.analyze(a, 1)
        if not len(fa):
            raise NoFaceError("no face was found in the source image")
        why = quality_reasons(fa, quality_filter)[0]
        if why:
            raise InvalidParameterError(
                f"the largest face of the source image does not pass the "
                f"{quality_filter.value} quality filter ({', '.join(why)})")
        fb = pipeline.analyze(b)
        if not len(fb):
            raise NoFaceError("no face was found in the target image")
        assert fa.embeddings is not None and fb.embeddings is not None
        model = pipeline.model_version
        scores = sim.to_similarity(fb.embeddings @ fa.embeddings[0], model)
        best = float(scores.max())
        self.trail.note("compare", caller, probe_sha256=a.sha256, threshold=used,
                        details={"target_sha256": b.sha256, "similarity": round(best, 4),
                                 "match": best >= used})
        cal = self.models.calibration(model)
        return Comparison(best, best >= used, used, fa, fb, [float(s) for s in scores],
                          (a.width, a.height), (b.width, b.height),
                          None if cal is None else cal.risk(used, None))
