"""Cost of shot (cut) detection per decoded frame, at the clip's 640x360 and at 1080p.

Decodes the test clip (and a 1920x1080 H.264 version of it made with ``bench/video.py``'s
``make_variant``) with PyAV and times, per frame, what decoding costs and what
:meth:`facesearch.video.shots.ShotDetector.feed` adds (FFmpeg's scale to 256 px wide + BGR,
and PySceneDetect's ContentDetector), over ``--repeat`` passes; prints the median and p99 (ms)
and the cuts found.

    .venv/bin/python bench/shots.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from video import CLIP, make_variant  # noqa: E402

from facesearch.video.shots import ShotDetector  # noqa: E402


def measure(path: Path, repeat: int) -> None:
    decode: list[float] = []
    feed: list[float] = []
    cuts: list[int] = []
    for _ in range(repeat):
        detector = ShotDetector(29.97)
        cuts = []
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            frames = c.decode(s)
            i = 0
            while True:
                t0 = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                if detector.feed(frame):
                    cuts.append(i)
                t2 = time.perf_counter()
                decode.append((t1 - t0) * 1000)
                feed.append((t2 - t1) * 1000)
                i += 1
    d, f = np.array(decode), np.array(feed)
    print(f"{path.name} ({frame.width}x{frame.height}, {len(d) // repeat} frames x {repeat}): "
          f"decode median {np.median(d):.2f} ms; shot detection median {np.median(f):.3f} ms, "
          f"p99 {np.percentile(f, 99):.3f} ms, mean {f.mean():.3f} ms "
          f"({100 * f.mean() / d.mean():.0f} % of decoding); cuts at frames {cuts}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    measure(CLIP, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        hd = make_variant(Path(tmp) / "clip-1080p.mp4", 1920, 1080, None)
        measure(hd, args.repeat)


if __name__ == "__main__":
    main()
