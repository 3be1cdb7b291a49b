"""Shot boundaries (cuts) in stored video and live streams, with PySceneDetect's ContentDetector.

Every decoded frame (not only the sampled ones: a cut between two analysed frames must still
be seen) is scaled by FFmpeg (area averaging) to :data:`ANALYSIS_WIDTH` pixels wide, as
PySceneDetect's own ``SceneManager`` downscales by default, and given to
:class:`scenedetect.detectors.ContentDetector`: the mean change of hue, saturation and
luma (0-255 each) from the previous frame, averaged; a frame whose change is at least
:data:`CUT_THRESHOLD` (27, PySceneDetect's default) starts a new shot, unless the last cut was
less than :data:`MIN_SHOT_FRAMES` frames before (a flash or a two-frame dissolve is one cut,
PySceneDetect's ``SUPPRESS`` mode, which reports a cut on the frame it happens, with no delay).

Frames are decoded once: the detector reads the frames that :func:`facesearch.video.frames.
iter_frames` and the stream processors' capture thread decode anyway. On the test clip (640x360)
the three cuts score 48.6-59.9 while frames within a shot stay at or under 20.8 (docs/video.md).
"""

from __future__ import annotations

import av
import numpy as np
from scenedetect import FrameTimecode
from scenedetect.detector import FlashFilter
from scenedetect.detectors import ContentDetector

ANALYSIS_WIDTH = 256
"""Width (px) frames are scaled to for cut detection (height keeps the aspect ratio)."""
CUT_THRESHOLD = 27.0
"""ContentDetector's score (mean HSV change, 0-255) at or above which a frame starts a shot."""
MIN_SHOT_FRAMES = 6
"""Least frames between two cuts (about 0.2 s at 30 frames/s)."""


class ShotDetector:
    """Counts shots over consecutive decoded frames (see the module docstring).

    Feed every decoded frame, in order, to :meth:`feed`; ``shot`` is the index (0, 1, ...)
    of the shot of the last frame fed. ``fps`` only sets the scale of PySceneDetect's
    timecodes (the minimum shot length is counted in frames).
    """

    def __init__(self, fps: float = 30.0, threshold: float = CUT_THRESHOLD,
                 min_shot_frames: int = MIN_SHOT_FRAMES) -> None:
        self.fps = fps if fps > 0 else 30.0
        self._detector = ContentDetector(threshold=threshold, min_scene_len=min_shot_frames,
                                         filter_mode=FlashFilter.Mode.SUPPRESS)
        self._size: tuple[int, int] | None = None
        self._n = 0
        self.shot = 0
        self.last_score = 0.0
        """The ContentDetector score of the last frame fed (0 for the first)."""

    def _small(self, frame: av.VideoFrame) -> np.ndarray:
        if self._size is None or self._size[0] != frame.width:
            w = min(ANALYSIS_WIDTH, frame.width)
            h = max(2, round(frame.height * w / max(frame.width, 1)))
            self._size = (w, h - h % 2)
        w, h = self._size
        return np.asarray(frame.reformat(width=w, height=h, format="bgr24",
                                         interpolation="AREA").to_ndarray())

    def feed(self, frame: av.VideoFrame) -> bool:
        """Whether ``frame`` (the next decoded frame) starts a new shot."""
        return self.feed_pixels(self._small(frame))

    def feed_pixels(self, bgr: np.ndarray) -> bool:
        """:meth:`feed` for a frame already scaled to the analysis size (BGR, uint8)."""
        cuts = self._detector.process_frame(FrameTimecode(self._n, self.fps), bgr)
        self.last_score = float(self._detector._frame_score or 0.0)
        self._n += 1
        if cuts:
            self.shot += 1
            return True
        return False
