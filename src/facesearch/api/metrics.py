"""Prometheus metrics of one app, in its own registry (served at ``/metrics``).

- ``facesearch_requests_total{api, operation, status}``: requests answered.
- ``facesearch_request_duration_seconds{api, operation}``: time to answer (histogram).
- ``facesearch_queue_depth`` / ``facesearch_workers_busy``: inference jobs waiting / running.
- ``facesearch_rejected_total{reason}``: requests refused before any work (queue full, ...).
- ``facesearch_faces_indexed_total``: faces stored by IndexFaces.
- ``facesearch_searches_total{operation}``: 1:N and 1:1 searches answered successfully.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SEARCH_OPERATIONS = frozenset({"SearchFaces", "SearchFacesByImage", "CompareFaces",
                               "SearchUsers", "SearchUsersByImage"})


class Metrics:
    def __init__(self, queue_depth: Callable[[], float], busy: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("facesearch_requests", "Requests answered",
                                ["api", "operation", "status"], registry=r)
        self.latency = Histogram(
            "facesearch_request_duration_seconds", "Time to answer a request",
            ["api", "operation"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.queue_depth = Gauge("facesearch_queue_depth", "Inference jobs waiting", registry=r)
        self.queue_depth.set_function(queue_depth)
        self.busy = Gauge("facesearch_workers_busy", "Inference jobs running", registry=r)
        self.busy.set_function(busy)
        self.rejected = Counter("facesearch_rejected", "Requests refused before any work",
                                ["reason"], registry=r)
        self.faces_indexed = Counter("facesearch_faces_indexed", "Faces stored by IndexFaces",
                                     registry=r)
        self.searches = Counter("facesearch_searches", "Searches answered successfully",
                                ["operation"], registry=r)

    def observe(self, api: str, operation: str, status: int, seconds: float) -> None:
        self.requests.labels(api, operation, str(status)).inc()
        self.latency.labels(api, operation).observe(seconds)
        if operation in SEARCH_OPERATIONS and status < 400:
            self.searches.labels(operation).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
