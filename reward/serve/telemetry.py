"""The server's Prometheus metrics (GET /metrics, text format 0.0.4), in a registry of its own so that two
servers in one process (the tests) do not share counters.

    reward_requests_total{endpoint,status}    requests answered
    reward_request_latency_seconds{endpoint}  request received -> reply ready
    reward_completions_total                  completions scored
    reward_queue_depth                        completions waiting for the model
    reward_batch_sequences / _requests / _tokens / _seconds   per micro-batch: completions, requests merged,
                                              tokens computed, seconds of the forward
    reward_tokens_requested_total             tokens of the scored sequences, each counted whole: what a
                                              per-sequence forward (OpenRLHF's serve_rm) computes
    reward_tokens_computed_total              tokens the model ran: a shared prompt once per micro-batch
    reward_prompt_tokens_saved_total          requested - computed
    reward_dropped_completions_total          dropped because their client went away
    reward_length_rule_total{action}          completions the length rule cut (truncated) or left unscored
"""

from __future__ import annotations

from collections.abc import Callable


class Telemetry:
    def __init__(self, queue_depth: Callable[[], float]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry()
        powers = [2.0**i for i in range(0, 17)]
        self.requests = Counter("reward_requests", "Requests answered", ["endpoint", "status"], registry=registry)
        self.latency = Histogram(
            "reward_request_latency_seconds",
            "Seconds from the request received to the reply ready",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.completions = Counter("reward_completions", "Completions scored", registry=registry)
        self.queue = Gauge("reward_queue_depth", "Completions waiting for the model", registry=registry)
        self.queue.set_function(queue_depth)
        self.batch_sequences = Histogram(
            "reward_batch_sequences", "Completions per micro-batch", buckets=powers[:12], registry=registry
        )
        self.batch_requests = Histogram(
            "reward_batch_requests", "Requests merged into one micro-batch", buckets=powers[:8], registry=registry
        )
        self.batch_tokens = Histogram(
            "reward_batch_tokens", "Tokens computed per micro-batch", buckets=powers[4:], registry=registry
        )
        self.batch_seconds = Histogram(
            "reward_batch_seconds",
            "Seconds of the model's forward per micro-batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.tokens_requested = Counter(
            "reward_tokens_requested", "Tokens of the scored sequences, each counted whole", registry=registry
        )
        self.tokens_computed = Counter(
            "reward_tokens_computed", "Tokens run through the model (a shared prompt once)", registry=registry
        )
        self.saved = Counter(
            "reward_prompt_tokens_saved", "Tokens not computed thanks to a shared prompt", registry=registry
        )
        self.dropped = Counter(
            "reward_dropped_completions", "Completions dropped: their client went away", registry=registry
        )
        self.lengths = Counter(
            "reward_length_rule", "Completions the length rule cut or left unscored", ["action"], registry=registry
        )

    def observe_batch(self, stats: dict) -> None:
        """One micro-batch (reward/serve/batcher.py calls this from the worker thread; the metrics are
        thread-safe)."""
        self.completions.inc(stats["sequences"])
        self.batch_sequences.observe(stats["sequences"])
        self.batch_requests.observe(stats["requests"])
        self.batch_tokens.observe(stats["tokens_computed"])
        self.batch_seconds.observe(stats["seconds"])
        self.tokens_requested.inc(stats["tokens_requested"])
        self.tokens_computed.inc(stats["tokens_computed"])
        self.saved.inc(max(0, stats["tokens_requested"] - stats["tokens_computed"]))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
