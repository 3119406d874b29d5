"""Prometheus metrics of the service (``GET /metrics``, the text exposition format), on a
registry of its own per app (several apps in one process, as in the tests, do not collide).

- ``detect_requests_total{route, status}``: answered requests;
- ``detect_request_seconds{route}``: latency histogram, decode to response;
- ``detect_inference_seconds``: time of each batch's ``Predictor.predict``;
- ``detect_batch_size``: images per forward pass (histogram);
- ``detect_errors_total{route, code}``: refused or failed requests by error code;
- ``detect_queue_depth``: images waiting for the model;
- ``detect_images_total``: images run through the model.

With ``detect serve --workers N`` each worker process counts for itself (scrape them one by one,
or run one worker per replica behind the load balancer).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the route)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("detect_requests", "answered requests", ["route", "status"], registry=r)
        self.latency = Histogram("detect_request_seconds", "request latency, body read to response", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("detect_inference_seconds", "Predictor.predict time per batch",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("detect_batch_size", "images per forward pass", buckets=BATCH_BUCKETS, registry=r)
        self.errors = Counter("detect_errors", "refused or failed requests", ["route", "code"], registry=r)
        self.queue = Gauge("detect_queue_depth", "images waiting for the model", registry=r)
        self.images = Counter("detect_images", "images run through the model", registry=r)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch.observe(size)
        self.inference.observe(seconds)
        self.images.inc(size)

    def answered(self, route: str, seconds: float) -> None:
        """A request of ``route`` answered with 200 after ``seconds``."""
        self.latency.labels(route).observe(seconds)
        self.requests.labels(route, "200").inc()

    def refused_body(self) -> None:
        """A body refused by its Content-Length, before any route saw it."""
        self.errors.labels("any", "body_too_large").inc()
        self.requests.labels("any", "413").inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
