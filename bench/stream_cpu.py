"""CPU a live stream costs: process CPU time per second of wall time (cores), at 5 processed
frames/s (``max_fps``), for the test clip (640x360) and a 1080p H.264 version of it, each played
as a looped real-time camera (29.97 frames/s in) for two loops after a 3 s warm-up. With the
processing rate fixed, the difference between two versions is what they add per frame decoded
(shot detection) and per frame processed (identity checks), whatever else runs on the machine.

    .venv/bin/python bench/stream_cpu.py
"""
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from video import FACES, make_variant  # noqa: E402

from facesearch.config import Settings  # noqa: E402
from facesearch.media.stream.model import StreamSettings  # noqa: E402
from facesearch.service import FaceSearch  # noqa: E402


def main() -> None:
    t = Path(tempfile.mkdtemp())
    files = {"360p": FACES / "short_hamilton_clip.mp4",
             "1080p": make_variant(t / "hd.mp4", 1920, 1080, None)}
    fs = FaceSearch(Settings(home=t / "home"))
    fs.collections.create("watch")
    fs.collections.index_image("watch", FACES / "lin-manuel-miranda.png",
                               external_id="lin-manuel-miranda")
    try:
        for label, f in files.items():
            p = fs.streams.foreground(StreamSettings(input_url=str(f), collection="watch",
                                                     max_fps=5.0), name="bench")
            p.start()
            time.sleep(3)
            m0, c0, w0 = p.metrics(), time.process_time(), time.monotonic()
            time.sleep(18.4)  # two loops of the clip
            m1, c1, w1 = p.metrics(), time.process_time(), time.monotonic()
            p.shutdown()
            wall = w1 - w0
            print(f"{label}: frames in {(m1.frames_in - m0.frames_in) / wall:.1f}/s, processed "
                  f"{(m1.frames_processed - m0.frames_processed) / wall:.2f}/s, CPU "
                  f"{(c1 - c0) / wall:.3f} cores, load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        fs.shutdown()


if __name__ == "__main__":
    main()
