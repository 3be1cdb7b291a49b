"""A loopback RTSP server for the stream tests: GStreamer's RTSP server serving an MP4 file.

Runs under the system Python (``/usr/bin/python3``, which has the GObject bindings from
``python3-gi`` and ``gir1.2-gst-rtsp-server-1.0``; see scripts/install-test-deps), never the
project's venv:

    /usr/bin/python3 tests/media/rtsp_server.py --port 8554 --path /clip FILE.mp4

Each client that connects gets its own playback of the file from the start, in real time
(H.264 passed through, not re-encoded). The server prints ``READY`` once it listens.
"""

from __future__ import annotations

import argparse
import signal
import sys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--path", default="/clip")
    ap.add_argument("--address", default="127.0.0.1")
    args = ap.parse_args()

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = args.file.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(
        f'( filesrc location="{location}" ! qtdemux name=d d.video_0 ! queue '
        f"! rtph264pay name=pay0 pt=96 config-interval=-1 )")
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on {args.address}:{args.port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print("READY", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
