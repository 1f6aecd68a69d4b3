"""Prometheus metrics of the server (GET /metrics): requests, queue time, time to first token, time per output
token, tokens in/out, batch size, cache hits, errors.

Each app owns its own registry, so several servers (tests) in one process do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2)


class ServeMetrics:
    def __init__(self, engine=None, cache=None):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("tuneforge_requests", "Requests answered, by model, endpoint and HTTP status",
                                ["model", "endpoint", "status"], registry=r)
        self.errors = Counter("tuneforge_errors", "Error answers, by type (OpenAI error type)", ["type"],
                              registry=r)
        self.queue_time = Histogram("tuneforge_queue_time_seconds", "Wait from arrival to the start of prefill",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("tuneforge_time_to_first_token_seconds", "Arrival to first generated token",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("tuneforge_time_per_output_token_seconds",
                              "Mean time between output tokens after the first, per request", ["model"],
                              buckets=TOKEN_BUCKETS, registry=r)
        self.latency = Histogram("tuneforge_request_latency_seconds", "Arrival to last token", ["model"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("tuneforge_prompt_tokens", "Prompt tokens in", ["model"], registry=r)
        self.completion_tokens = Counter("tuneforge_completion_tokens", "Completion tokens out", ["model"],
                                         registry=r)
        self.batch_size = Histogram("tuneforge_batch_size", "Sequences in each decode step",
                                    buckets=(1, 2, 4, 8, 12, 16, 24, 32, 64), registry=r)
        self.cache_hits = Counter("tuneforge_cache_hits", "Response cache hits", registry=r)
        self.cache_misses = Counter("tuneforge_cache_misses", "Response cache misses", registry=r)
        self.cancelled = Counter("tuneforge_cancelled", "Generations stopped because the client went away",
                                 registry=r)
        if engine is not None:
            running = Gauge("tuneforge_running_sequences", "Sequences in the running batch", registry=r)
            running.set_function(lambda: engine.stats().get("running", 0))
            waiting = Gauge("tuneforge_waiting_requests", "Requests in the queue", registry=r)
            waiting.set_function(lambda: engine.stats().get("waiting", 0))
        if cache is not None:
            size = Gauge("tuneforge_cache_entries", "Entries in the response cache", registry=r)
            size.set_function(lambda: len(cache))

    def observe_generation(self, model: str, h) -> None:
        """Timings of one finished engine Handle."""
        if h.started is not None:
            self.queue_time.labels(model).observe(h.started - h.submitted)
        if h.first_token is not None:
            self.ttft.labels(model).observe(h.first_token - h.submitted)
            n = len(h.tokens_out)
            if n > 1 and h.finished is not None:
                self.tpot.labels(model).observe((h.finished - h.first_token) / (n - 1))
        if h.finished is not None:
            self.latency.labels(model).observe(h.finished - h.submitted)

    def render(self) -> bytes:
        return generate_latest(self.registry)
