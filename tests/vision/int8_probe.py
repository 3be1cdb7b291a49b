"""Run by tests/test_embed.py in a child process (natively or under valgrind, whose emulated
CPU has AVX2 but neither AVX-512 nor VNNI): embed saved chips with an ONNX model file on one
thread and save the raw outputs; with ``--verify``, also run the int8 known-answer check.

    python tests/vision/int8_probe.py MODEL.onnx CHIPS.npy OUT.npy [--verify]
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort


def main(model: str, chips_file: str, out: str, *flags: str) -> None:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    chips = np.load(chips_file)
    np.save(out, session.run(None, {session.get_inputs()[0].name: chips})[0])
    if "--verify" in flags:
        from facesearch.vision.convert.resnet_int8 import verify_int8_session

        verify_int8_session(session)
        print("verified")


if __name__ == "__main__":
    main(*sys.argv[1:])
