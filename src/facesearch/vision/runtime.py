"""The one inference runtime: ONNX Runtime sessions with execution providers, and the
worker processes that run them.

CPU by default; the CUDA provider is used when ``onnxruntime-gpu`` is installed and a GPU is
visible (``device="auto"``), or on request (``device="cuda"``).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Literal

import onnxruntime as ort

from facesearch.errors import ModelError

Device = Literal["auto", "cpu", "cuda"]


def select_providers(device: Device = "auto") -> list[str]:
    """Execution providers for ``device``, best first."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise ModelError(
            "device='cuda' was asked for but onnxruntime has no CUDA provider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu"
        )
    return ["CPUExecutionProvider"]


def default_threads() -> int:
    """Intra-op threads: ``FACESEARCH_THREADS`` if set, else the cores this process may use."""
    env = os.environ.get("FACESEARCH_THREADS")
    if env:
        return max(1, int(env))
    return max(1, len(os.sched_getaffinity(0)))


def create_session(
    model: Path | bytes, *, threads: int | None = None, device: Device = "auto"
) -> ort.InferenceSession:
    """An inference session for an ONNX model file or serialized model bytes.

    Full graph optimisation; ``threads`` intra-op threads (default :func:`default_threads`),
    one inter-op thread, no thread spinning (so idle sessions leave the cores to others).
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(source, sess_options=opts, providers=select_providers(device))
    except (ort.capi.onnxruntime_pybind11_state.Fail,
            ort.capi.onnxruntime_pybind11_state.InvalidGraph,
            ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
            ort.capi.onnxruntime_pybind11_state.NoSuchFile) as exc:
        raise ModelError(f"cannot load ONNX model {model if isinstance(model, Path) else '<bytes>'}: {exc}") from exc


def exit_with_parent(poll_s: float = 0.5) -> None:
    """In a worker process: end it (``os._exit``) as soon as its parent is gone.

    A pool's workers wait on a queue the parent feeds; a parent killed with SIGKILL cannot
    tell them to stop, and they would live on as orphans. A daemon thread polls the parent's
    pid every ``poll_s`` seconds (an orphan is re-parented, so the pid changes).
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
