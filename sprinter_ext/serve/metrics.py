"""Prometheus metrics of one server (its own registry: two apps in a process never mix).

Exposed at ``GET /metrics`` in the Prometheus text format:

- ``sprinter_requests_total{endpoint, status}``: finished requests by HTTP status;
- ``sprinter_prompt_tokens_total`` / ``sprinter_generation_tokens_total{method}``;
- ``sprinter_draft_tokens_total`` / ``sprinter_accepted_tokens_total{method}`` and the
  gauge ``sprinter_acceptance_rate{method}`` = accepted / drafted over the server's life;
- ``sprinter_target_calls_total{method}``;
- histograms ``sprinter_time_to_first_token_seconds{method}`` (request arrival to the
  first generated token, queueing included), ``sprinter_inter_token_latency_seconds{method}``
  and ``sprinter_request_latency_seconds{endpoint}``;
- gauges ``sprinter_queue_depth`` (requests waiting for a Decoder) and
  ``sprinter_pool_busy`` (Decoders generating).
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the app)

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

# Batch-1 latencies on a CPU run from a few ms (a tiny model) to seconds (queueing).
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_REQ_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The server's counters, gauges and histograms, thread-safe (workers update them)."""

    def __init__(self):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("sprinter_requests", "Finished requests", ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("sprinter_prompt_tokens", "Prompt tokens processed", ["method"], registry=r)
        self.generation_tokens = Counter("sprinter_generation_tokens", "Tokens generated", ["method"], registry=r)
        self.draft_tokens = Counter("sprinter_draft_tokens", "Draft tokens proposed", ["method"], registry=r)
        self.accepted_tokens = Counter("sprinter_accepted_tokens", "Draft tokens accepted", ["method"], registry=r)
        self.target_calls = Counter("sprinter_target_calls", "Target model forwards", ["method"], registry=r)
        self.acceptance_rate = Gauge(
            "sprinter_acceptance_rate", "Accepted / drafted tokens since start", ["method"], registry=r
        )
        self.ttft = Histogram(
            "sprinter_time_to_first_token_seconds", "Request arrival to first generated token", ["method"],
            buckets=_TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.itl = Histogram(
            "sprinter_inter_token_latency_seconds", "Time per generated token after the first", ["method"],
            buckets=_ITL_BUCKETS, registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "sprinter_request_latency_seconds", "Request arrival to its last byte", ["endpoint"],
            buckets=_REQ_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge("sprinter_queue_depth", "Requests waiting for a Decoder", registry=r)
        self.pool_busy = Gauge("sprinter_pool_busy", "Decoders generating now", registry=r)
        self._lock = threading.Lock()
        self._drafted: dict[str, float] = {}
        self._accepted: dict[str, float] = {}

    def record_run(self, method: str, prompt_tokens: int, new_tokens: int, stats: dict) -> None:
        """Count one finished (or stopped) generation from its Decoder stats."""
        self.prompt_tokens.labels(method).inc(prompt_tokens)
        self.generation_tokens.labels(method).inc(new_tokens)
        drafted, accepted = int(stats.get("draft_tokens", 0)), int(stats.get("accepted_tokens", 0))
        self.target_calls.labels(method).inc(int(stats.get("target_calls", 0)))
        if drafted:
            self.draft_tokens.labels(method).inc(drafted)
            self.accepted_tokens.labels(method).inc(accepted)
            with self._lock:
                self._drafted[method] = self._drafted.get(method, 0) + drafted
                self._accepted[method] = self._accepted.get(method, 0) + accepted
                self.acceptance_rate.labels(method).set(self._accepted[method] / self._drafted[method])

    def render(self) -> bytes:
        return generate_latest(self.registry)
