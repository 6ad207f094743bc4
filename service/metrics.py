"""Prometheus collectors (prefix purifier_, seconds, labelled by model). Each app owns a
registry, so several apps (tests) never share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry

        def seconds(name: str, doc: str) -> Histogram:
            return Histogram(
                f"purifier_{name}_seconds", doc, ["model"], buckets=LATENCY_BUCKETS, registry=r
            )

        self.request = seconds(
            "request",
            "Whole request time, decode to encode (proxy mode: less the upstream's round trip)",
        )
        self.queue = seconds("queue", "Time an image waited in the batching queue")
        self.inference = seconds("inference", "onnxruntime time of one batch")
        self.decode = seconds("decode", "Image decode time")
        self.encode = seconds("encode", "Image encode time")
        self.batch_size = Histogram(
            "purifier_batch_size",
            "Images per inference batch",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "purifier_pending_requests", "Images queued or running", ["model"], registry=r
        )
        self.requests = Counter(
            "purifier_requests", "Requests by route and status", ["route", "status"], registry=r
        )
        self.rejections = Counter(
            "purifier_rejections", "Rejected requests by reason", ["reason"], registry=r
        )
        self.suspicious = Counter(
            "purifier_suspicious",
            "Images whose residual the suspicion verdict flagged",
            ["model"],
            registry=r,
        )
        # Proxy mode: the upstream's round trip (labelled by upstream models that
        # answered, so a caller's made-up names never become label values) and failures.
        self.upstream = Histogram(
            "purifier_upstream_seconds",
            "Round trip to the upstream model server (proxy mode), answered requests",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "purifier_upstream_errors",
            "Proxied requests the upstream failed (5xx, unreachable, timeout)",
            ["reason"],
            registry=r,
        )
        self.model_info = Info("purifier_model", "Model served", ["model"], registry=r)
