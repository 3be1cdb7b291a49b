"""Per-collection use policy and per-caller search limits.

A collection's :class:`CollectionPolicy` says whether 1:N searches must state a purpose and a
case reference, the lowest similarity threshold a search may use (a floor: lower thresholds
are refused, never silently raised), the most candidates a search may return, and how long
faces are kept. Collections marked ``law_enforcement`` get strict defaults: purpose and case
required, a floor at the similarity whose calibrated false-match rate is at most 1e-6
(:data:`LAW_ENFORCEMENT_FMR`), at most :data:`LAW_ENFORCEMENT_MAX_RESULTS` candidates, and
probe faces less recognisable than :data:`LAW_ENFORCEMENT_MIN_RECOGNISABILITY` refused.

:class:`SearchLimiter` enforces a per-caller rate of 1:N searches (a token bucket) and raises an
alert when a caller's volume spikes far above its own baseline.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from facesearch.errors import InvalidParameterError, ThrottledError
from facesearch.limits import MAX_RESULTS
from facesearch.types import Caller

LAW_ENFORCEMENT_FMR = 1e-6
LAW_ENFORCEMENT_MAX_RESULTS = 50
LAW_ENFORCEMENT_MIN_RECOGNISABILITY = 40.0
"""Recognisability (0-100) below which a law-enforcement collection refuses a probe face: the
edge of the ``medium`` quality band (:data:`facesearch.governance.bands.BANDS`; figures
in docs/accuracy.md). Other collections search such probes and warn."""
CONSERVATIVE_FLOOR = 99.0
"""Floor used when no calibration is available: each model's similarity scale puts 99 near
where one in a million different-person pairs of the lfw-dev images still scores as high
(SFace: 1.1e-6; dlib's ResNet: 2.3e-6)."""


class CollectionPolicy(BaseModel):
    """What a collection allows. ``None`` fields take the defaults of the collection's kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    law_enforcement: bool = False
    require_purpose: bool | None = Field(
        None, description="1:N searches must give a purpose and a case reference "
                          "(default: true for law-enforcement collections)")
    threshold_floor: float | None = Field(
        None, ge=0, le=100, description="lowest similarity threshold a 1:N search may use "
                                        "(default: FMR <= 1e-6 for law-enforcement collections)")
    max_results_cap: int | None = Field(
        None, ge=1, le=MAX_RESULTS, description="most candidates a 1:N search may return")
    retention_days: float | None = Field(
        None, gt=0, description="faces older than this are erased automatically")
    min_probe_recognisability: float | None = Field(
        None, ge=0, le=100, description="1:N image searches refuse a probe face less "
                                        "recognisable than this (0-100; default: 40 for "
                                        "law-enforcement collections, else 0: they warn)")


@dataclass(frozen=True)
class EffectivePolicy:
    """A policy with its defaults resolved."""

    law_enforcement: bool
    require_purpose: bool
    threshold_floor: float
    max_results_cap: int
    retention_days: float | None
    floor_fmr: float | None
    """The calibrated false-match rate at the floor, when known."""
    min_probe_recognisability: float = 0.0
    """Probe faces less recognisable than this (0-100) are refused."""


def resolve(policy: CollectionPolicy, floor_for_fmr: Callable[[float], float] | None,
            fmr_at: Callable[[float], float] | None = None) -> EffectivePolicy:
    """Fill in defaults. ``floor_for_fmr(fmr)`` gives the similarity whose calibrated FMR is at
    most ``fmr`` (None: use :data:`CONSERVATIVE_FLOOR`)."""
    le = policy.law_enforcement
    floor = policy.threshold_floor
    if floor is None:
        if le:
            floor = (floor_for_fmr(LAW_ENFORCEMENT_FMR) if floor_for_fmr is not None
                     else CONSERVATIVE_FLOOR)
        else:
            floor = 0.0
    cap = policy.max_results_cap or (LAW_ENFORCEMENT_MAX_RESULTS if le else MAX_RESULTS)
    require = policy.require_purpose if policy.require_purpose is not None else le
    recog = policy.min_probe_recognisability
    if recog is None:
        recog = LAW_ENFORCEMENT_MIN_RECOGNISABILITY if le else 0.0
    return EffectivePolicy(le, require, float(floor), int(cap), policy.retention_days,
                           fmr_at(floor) if fmr_at is not None and floor > 0 else None,
                           float(recog))


class FloorCalibration(Protocol):
    """What the policy needs of a model's calibration: the similarity for an FMR, and the FMR
    at a similarity (:class:`facesearch.governance.calibration.Calibration`)."""

    def threshold_for_fmr(self, fmr: float) -> float: ...

    def false_match_rate(self, similarity: float) -> float: ...


def of_collection(settings: Mapping[str, Any], calibration: FloorCalibration | None
                  ) -> tuple[CollectionPolicy, EffectivePolicy]:
    """A collection's stated policy (from its stored ``settings``) and the policy in force."""
    stated = CollectionPolicy(**settings.get("policy", {}))
    return stated, resolve(stated, calibration.threshold_for_fmr if calibration else None,
                           calibration.false_match_rate if calibration else None)


def check_purpose(policy: EffectivePolicy, caller: Caller, what: str = "search") -> None:
    """:class:`InvalidParameterError` when the policy requires a purpose and a case reference
    and ``caller`` states none (searches, and the faces' crops a reviewer sees)."""
    if policy.require_purpose and not (caller.purpose and caller.case_ref):
        raise InvalidParameterError(
            f"this collection's policy requires a purpose and a case reference for every {what} "
            "(CLI: --purpose and --case; HTTP: X-Facesearch-Purpose and X-Facesearch-Case "
            "headers, or an access key issued for a case)"
        )


def check_search(policy: EffectivePolicy, caller: Caller, threshold: float | None,
                 max_results: int, default_threshold: float) -> float:
    """Apply the policy to a 1:N search; returns the threshold to use.

    A missing threshold becomes the larger of ``default_threshold`` and the floor; a given one
    below the floor is refused, as are missing purpose/case (when required) and too many
    results.
    """
    check_purpose(policy, caller)
    if threshold is None:
        threshold = max(default_threshold, policy.threshold_floor)
    elif threshold < policy.threshold_floor:
        risk = (f" (false-match rate {policy.floor_fmr:.1e} per comparison at the floor)"
                if policy.floor_fmr is not None else "")
        raise InvalidParameterError(
            f"threshold {threshold:g} is below this collection's floor of "
            f"{policy.threshold_floor:.2f}{risk}; searches below the floor are refused"
        )
    if max_results > policy.max_results_cap:
        raise InvalidParameterError(
            f"max results {max_results} exceeds this collection's cap of "
            f"{policy.max_results_cap} candidates per search"
        )
    return float(threshold)


@dataclass
class _Bucket:
    tokens: float
    updated: float
    window_start: float
    window_count: int = 0
    baseline: float | None = None
    windows: int = 0
    alerted_window: float = -1.0


@dataclass(frozen=True)
class Spike:
    """A caller's search volume in the current window far above its own baseline."""

    actor: str
    count: int
    baseline: float
    window_seconds: float


@dataclass
class SearchLimiter:
    """Token-bucket rate limit of 1:N searches per caller, with volume-spike detection.

    ``per_minute`` tokens a minute sustained (bursts up to ``burst``); 0 disables the limit.
    A search costs one token per probe face or query vector it searches: it is admitted while
    the caller has a token left (:meth:`acquire`, before any image work), and then charged the
    rest of its cost (:meth:`charge`), which may leave the bucket in debt: the caller's next
    search waits until the debt is refilled. So one search of 38 faces costs 38 tokens, and
    a video job's 1,000 vectors 1,000.
    Volume is counted in windows of ``window_seconds``; the baseline is an exponential moving
    average of past windows (weight ``alpha``); a window whose count exceeds both
    ``spike_factor`` x baseline and ``spike_min`` is a spike, reported once per window to
    ``on_spike``. Needs ``min_windows`` past windows before it judges.
    """

    per_minute: float = 600.0
    burst: float = 60.0
    window_seconds: float = 600.0
    spike_factor: float = 5.0
    spike_min: int = 50
    alpha: float = 0.2
    min_windows: int = 3
    clock: Callable[[], float] = time.monotonic
    on_spike: Callable[[Spike], None] | None = None
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, actor: str) -> None:
        """Count one search by ``actor``; raises :class:`ThrottledError` over the limit."""
        now = self.clock()
        spike: Spike | None = None
        with self._lock:
            b = self._buckets.get(actor)
            if b is None:
                b = self._buckets[actor] = _Bucket(self.burst, now, now)
            self._roll(b, now)
            if self.per_minute > 0:
                b.tokens = min(self.burst, b.tokens + (now - b.updated) * self.per_minute / 60)
                b.updated = now
                if b.tokens < 1.0:
                    wait = (1.0 - b.tokens) * 60 / self.per_minute
                    raise ThrottledError(
                        f"search rate limit of {self.per_minute:g} per minute reached for "
                        f"{actor}; retry in {math.ceil(wait)} s", retry_after=math.ceil(wait))
                b.tokens -= 1.0
            b.window_count += 1
            if (b.baseline is not None and b.windows >= self.min_windows
                    and b.window_count > max(self.spike_min, self.spike_factor * b.baseline)
                    and b.alerted_window != b.window_start):
                b.alerted_window = b.window_start
                spike = Spike(actor, b.window_count, b.baseline, self.window_seconds)
        if spike is not None and self.on_spike is not None:
            self.on_spike(spike)

    def charge(self, actor: str, cost: float) -> None:
        """Charge ``actor`` ``cost`` more tokens for a search :meth:`acquire` admitted (its
        further probe faces or vectors); never refuses: the bucket may go into debt."""
        if self.per_minute <= 0 or cost <= 0:
            return
        now = self.clock()
        with self._lock:
            b = self._buckets.get(actor)
            if b is None:
                b = self._buckets[actor] = _Bucket(self.burst, now, now)
            b.tokens = min(self.burst, b.tokens + (now - b.updated) * self.per_minute / 60)
            b.updated = now
            b.tokens -= cost

    def _roll(self, b: _Bucket, now: float) -> None:
        while now - b.window_start >= self.window_seconds:
            count = b.window_count
            b.baseline = count if b.baseline is None else (
                self.alpha * count + (1 - self.alpha) * b.baseline)
            b.windows += 1
            b.window_count = 0
            b.window_start += self.window_seconds
            if b.window_count == 0 and now - b.window_start >= 100 * self.window_seconds:
                # Long idle: fold the empty windows in at once.
                idle = int((now - b.window_start) // self.window_seconds)
                b.baseline *= (1 - self.alpha) ** idle
                b.windows += idle
                b.window_start += idle * self.window_seconds
