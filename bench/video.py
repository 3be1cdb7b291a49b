"""Live stream throughput and latency: frames/s processed, streams at once, frame-to-event latency.

Makes 1080p and 720p versions of the test clip (scaled and re-encoded with PyAV, H.264), plays
each as a looped, real-time simulated camera through a stream processor watching a collection
that holds Lin-Manuel Miranda, and measures over ``--seconds`` (after a warm-up):

1. one 1080p@29.97 stream and one 720p@29.97 stream: frames/s in and processed, dropped share,
   frame-to-processed and frame-to-event latency p50/p99;
2. N = 1, 2, ... 720p@15 streams at once until one falls below ``--min-fps``: per-stream
   processed frames/s (the slowest stream), and how many streams keep up with every frame
   (15 fps processed) or with each target in ``--targets``.

3. a stored-video face search job on the 720p file, sampled at ``--job-fps``: frames/s
   analysed and speed against real time.

    .venv/bin/python bench/video.py [--seconds 30] [--warmup 5] [--max-streams 6]
        [--targets 15,5,2] [--pipeline dlib] [--detect-max-side 1280] [--job-fps 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "testdata" / "faces"
CLIP = FACES / "short_hamilton_clip.mp4"


def make_variant(dst: Path, width: int, height: int, fps: float | None) -> Path:
    """The clip scaled to ``width`` x ``height`` (H.264, yuv420p), resampled to ``fps``."""
    import av
    import cv2

    from facesearch.video.frames import iter_frames, probe

    rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(30000, 1001)
    with av.open(str(dst), "w") as out:
        s = out.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "20"}
        for k, fr in enumerate(iter_frames(CLIP, sample_fps=fps)):
            img = cv2.resize(fr.pixels, (width, height), interpolation=cv2.INTER_CUBIC)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = k
            vf.time_base = 1 / rate
            for pkt in s.encode(vf):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    info = probe(dst)
    print(f"  made {dst.name}: {info.width}x{info.height} @ {info.fps:.2f} fps, "
          f"{info.duration_ms} ms", flush=True)
    return dst


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_streams(fs, files: list[Path], seconds: float, warmup: float,
                detect_max_side: int | None) -> list[dict[str, float]]:
    """Run one processor per file for warmup + seconds; per-stream measures over ``seconds``."""
    from facesearch.media.stream.model import StreamSettings

    procs = [fs.streams.foreground(StreamSettings(
        input_url=str(f), collection="watch", detect_max_side=detect_max_side),
        name=f"bench-{i}") for i, f in enumerate(files)]
    for p in procs:
        p.start()
    try:
        time.sleep(warmup)
        before = [p.metrics() for p in procs]
        for p in procs:
            p._latency.clear()
            p._processing.clear()
        time.sleep(seconds)
        after = [p.metrics() for p in procs]
        lat = [list(p._latency) for p in procs]
        proc_lat = [list(p._processing) for p in procs]
    finally:
        for p in procs:
            p.shutdown()
    out = []
    for b, a, ev, pl in zip(before, after, lat, proc_lat, strict=True):
        n_in = a.frames_in - b.frames_in
        n_done = a.frames_processed - b.frames_processed
        out.append({
            "fps_in": n_in / seconds, "fps_processed": n_done / seconds,
            "dropped": 1 - n_done / n_in if n_in else 0.0,
            "proc_p50": float(np.percentile(pl, 50)) if pl else float("nan"),
            "proc_p99": float(np.percentile(pl, 99)) if pl else float("nan"),
            "events": len(ev), "ev_p50": float(np.percentile(ev, 50)) if ev else float("nan"),
            "ev_p99": float(np.percentile(ev, 99)) if ev else float("nan"),
            "ev_all": ev, "cuts": getattr(a, "cuts", 0) - getattr(b, "cuts", 0),
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--max-streams", type=int, default=6)
    ap.add_argument("--targets", default="15,5,2", help="processed frames/s per stream")
    ap.add_argument("--min-fps", type=float, default=1.0,
                    help="stop adding streams when the slowest processes fewer frames/s")
    ap.add_argument("--pipeline", default=None)
    ap.add_argument("--detect-max-side", type=int, default=1280)
    ap.add_argument("--job-fps", type=float, default=5.0, help="stored video: frames sampled "
                                                               "per second")
    args = ap.parse_args()
    targets = sorted((float(t) for t in args.targets.split(",")), reverse=True)

    from facesearch.config import Settings
    from facesearch.service import FaceSearch
    from facesearch.video.scan import VideoJobSettings

    print(f"cores available: {len(os.sched_getaffinity(0))}; load average: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        print("making test streams ...", flush=True)
        v1080 = make_variant(t / "clip-1080p.mp4", 1920, 1080, None)
        v720 = make_variant(t / "clip-720p.mp4", 1280, 720, None)
        v720_15 = make_variant(t / "clip-720p15.mp4", 1280, 720, 15.0)
        overrides = {"home": t / "home"}
        if args.pipeline:
            overrides["pipeline"] = args.pipeline
        fs = FaceSearch(Settings(**overrides))
        try:
            fs.collections.create("watch")
            fs.collections.index_image("watch", FACES / "lin-manuel-miranda.png",
                                       external_id="lin-manuel-miranda")
            print(f"pipeline: {fs.pipeline.model_version}; detection on frames scaled to at "
                  f"most {args.detect_max_side} px", flush=True)
            all_events: list[float] = []

            print("\n1. one stream, real time (29.97 fps in), newest frame wins", flush=True)
            print(f"{'stream':>12} {'fps in':>7} {'processed':>9} {'dropped':>8} "
                  f"{'frame->processed p50/p99 ms':>28} {'events':>6} "
                  f"{'frame->event p50/p99 ms':>24} {'cuts':>5}   load")
            for label, f in (("1080p", v1080), ("720p", v720)):
                r = run_streams(fs, [f], args.seconds, args.warmup, args.detect_max_side)[0]
                all_events += r["ev_all"]
                print(f"{label:>12} {r['fps_in']:7.1f} {r['fps_processed']:9.2f} "
                      f"{r['dropped']:8.0%} {r['proc_p50']:13.0f} / {r['proc_p99']:<12.0f} "
                      f"{r['events']:6d} {r['ev_p50']:11.0f} / {r['ev_p99']:<10.0f} "
                      f"{r['cuts']:5d}  {load()}",
                      flush=True)

            print("\n2. N x 720p@15 streams at once (slowest stream's processed fps)",
                  flush=True)
            keeps: dict[float, int] = {tg: 0 for tg in targets}
            for n in range(1, args.max_streams + 1):
                rs = run_streams(fs, [v720_15] * n, args.seconds, args.warmup,
                                 args.detect_max_side)
                slowest = min(r["fps_processed"] for r in rs)
                total = sum(r["fps_processed"] for r in rs)
                evs = [x for r in rs for x in r["ev_all"]]
                all_events += evs
                p50 = np.percentile(evs, 50) if evs else float("nan")
                p99 = np.percentile(evs, 99) if evs else float("nan")
                for tg in targets:
                    if slowest >= 0.9 * tg:
                        keeps[tg] = n
                print(f"  N={n}: slowest {slowest:5.2f} fps, total {total:6.2f} fps, "
                      f"frame->event p50 {p50:.0f} ms p99 {p99:.0f} ms ({len(evs)} events); "
                      f"load {load()}", flush=True)
                if slowest < args.min_fps:
                    break
            for tg in targets:
                print(f"  720p@15 streams processed at >= {tg:g} fps each (90%): {keeps[tg]}")
            if all_events:
                print(f"\nframe-to-event latency over all runs: p50 "
                      f"{np.percentile(all_events, 50):.0f} ms, p99 "
                      f"{np.percentile(all_events, 99):.0f} ms ({len(all_events)} events)")

            print("\n3. stored video: face search job on the 720p clip (9.2 s)")
            for fps in (args.job_fps,):
                t0 = time.perf_counter()
                job_id = fs.video.start_face_search(
                    "watch", v720, settings=VideoJobSettings(sample_fps=fps,
                                                             detect_max_side=args.detect_max_side))
                job = fs.video.wait(job_id)
                dt = time.perf_counter() - t0
                print(f"  sample {fps:g} fps: {job.frames_analysed} frames in {dt:.1f} s = "
                      f"{(job.frames_analysed or 0) / dt:.2f} frames/s "
                      f"({9.176 / dt:.2f}x real time); {job.status.value}; load {load()}")
        finally:
            fs.shutdown()


if __name__ == "__main__":
    main()
