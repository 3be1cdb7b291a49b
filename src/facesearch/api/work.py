"""Bounded inference work: a fixed number of worker threads and a bounded wait queue.

Inference (decode, detect, embed) and vector search never run on the event loop: the routes
hand them to :class:`WorkPool` and await the result. At most ``workers`` jobs run and at most
``queue`` wait; a job beyond that is refused at once with :class:`QueueFullError` (503 with
``Retry-After`` natively, ``ThrottlingException`` on the Rekognition endpoint), so memory stays
bounded however many requests arrive.

dlib's detector and network are not safe to call from several threads at once, so the server
gives each worker thread its own pipeline (:class:`facesearch.vision.pipeline.ThreadLocalPipeline`,
loaded when the worker starts); thread-safe pipelines (ONNX Runtime sessions) pay only the
extra memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from facesearch.api.errors import QueueFullError

T = TypeVar("T")
_Job = tuple[Callable[[], Any], concurrent.futures.Future[Any]]


class WorkPool:
    """``workers`` threads taking jobs from a queue of at most ``queue`` waiting jobs.

    ``init`` runs first in each worker thread (e.g. to load that thread's pipeline);
    :attr:`ready` is set once every worker has run it. Threads start with :meth:`start`.
    """

    def __init__(self, workers: int, queue_size: int, *, retry_after_s: int = 1,
                 init: Callable[[], object] | None = None) -> None:
        self.workers = workers
        self.capacity = workers + queue_size
        self.retry_after_s = retry_after_s
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._admitted = 0
        self._running = 0
        self._lock = threading.Lock()
        self._init = init
        self._started = 0
        self.ready = threading.Event()
        self.init_error: BaseException | None = None
        self._threads = [threading.Thread(target=self._work, name=f"facesearch-worker-{i}",
                                          daemon=True) for i in range(workers)]

    def start(self) -> None:
        """Start the worker threads."""
        for t in self._threads:
            t.start()

    @property
    def depth(self) -> int:
        """Jobs admitted but not yet started."""
        with self._lock:
            return self._admitted - self._running

    @property
    def busy(self) -> int:
        """Jobs running now."""
        with self._lock:
            return self._running

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a worker and return its result; :class:`QueueFullError` when full."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise QueueFullError(
                    f"the server is busy: {self.workers} workers and a queue of "
                    f"{self.capacity - self.workers} are taken; retry later",
                    retry_after=self.retry_after_s)
            self._admitted += 1
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((fn, fut))
        return await asyncio.wrap_future(fut)

    def _work(self) -> None:
        if self._init is not None:
            try:
                self._init()
            except BaseException as exc:  # reported by readiness and re-raised here
                self.init_error = exc
                raise
        with self._lock:
            self._started += 1
            if self._started == self.workers:
                self.ready.set()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, fut = job
            run = fut.set_running_or_notify_cancel()  # False: cancelled while it waited
            with self._lock:
                self._running += 1
            result: Any = None
            error: BaseException | None = None
            try:
                if run:
                    result = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the awaiting request
                error = exc
            finally:
                # The job leaves the counts before its caller is woken, so that what the
                # caller sees next (depth, busy, a new admission) no longer includes it.
                with self._lock:
                    self._running -= 1
                    self._admitted -= 1
            if run:
                if error is None:
                    fut.set_result(result)
                else:
                    fut.set_exception(error)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers after the jobs already queued."""
        started = [t for t in self._threads if t.ident is not None]
        for _ in started:
            self._jobs.put(None)
        if wait:
            for t in started:
                t.join()
