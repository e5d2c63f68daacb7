"""Prometheus metrics of the LLM server, exported at ``/metrics``.

Names follow usina's serving metrics (``usina_llm_*``) and mean what vLLM's do: time to first
token per request, time per output token per request (TPOT: (end - first token) / (tokens - 1),
one sample per request, not per token), tokens generated, queue depth, running sequences and
the batch size of each decode step. ``usina_llm_tokens_per_second`` is the decode throughput
averaged over the last few seconds, for dashboards; for alerts use ``rate()`` of the counter.
"""

from __future__ import annotations

import collections
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TTFT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TPOT = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_WINDOW_S = 5.0


class LLMMetrics:
    """All LLM metrics of one server, in their own registry."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "usina_llm_requests",
            "Requests by endpoint and HTTP status (429: shed; 499: client went away).",
            ["model", "endpoint", "status"],
            registry=r,
        )
        self.ttft = Histogram(
            "usina_llm_time_to_first_token_seconds",
            "From arrival to the first generated token, per request.",
            ["model"],
            buckets=_TTFT,
            registry=r,
        ).labels(model)
        self.tpot = Histogram(
            "usina_llm_time_per_output_token_seconds",
            "Mean time between output tokens after the first, one sample per request.",
            ["model"],
            buckets=_TPOT,
            registry=r,
        ).labels(model)
        self.e2e = Histogram(
            "usina_llm_request_duration_seconds",
            "From arrival to the last token, per finished request.",
            ["model"],
            buckets=_TTFT,
            registry=r,
        ).labels(model)
        self.prompt_tokens = Counter(
            "usina_llm_prompt_tokens", "Prompt tokens prefilled.", ["model"], registry=r
        ).labels(model)
        self.generated_tokens = Counter(
            "usina_llm_generation_tokens", "Tokens generated.", ["model"], registry=r
        ).labels(model)
        self.tokens_per_second = Gauge(
            "usina_llm_tokens_per_second",
            f"Tokens generated per second over the last {_WINDOW_S:g} s.",
            ["model"],
            registry=r,
        ).labels(model)
        self.waiting = Gauge(
            "usina_llm_queue_depth", "Sequences waiting for a batch slot.", ["model"], registry=r
        ).labels(model)
        self.running = Gauge(
            "usina_llm_running_sequences", "Sequences in the running batch.", ["model"], registry=r
        ).labels(model)
        self.batch_size = Histogram(
            "usina_llm_batch_size",
            "Sequences decoded together, per decode step.",
            ["model"],
            buckets=_BATCH,
            registry=r,
        ).labels(model)
        self.finished = Counter(
            "usina_llm_finished_sequences",
            "Sequences that left the batch, by reason (stop, length, cancelled).",
            ["model", "reason"],
            registry=r,
        )
        self._lock = threading.Lock()
        self._recent: collections.deque[tuple[float, int]] = collections.deque()

    def tokens(self, count: int, now: float | None = None) -> None:
        """``count`` tokens were generated in one step."""
        now = time.monotonic() if now is None else now
        self.generated_tokens.inc(count)
        with self._lock:
            self._recent.append((now, count))
            while self._recent and now - self._recent[0][0] > _WINDOW_S:
                self._recent.popleft()
            span = max(now - self._recent[0][0], 1e-3) if len(self._recent) > 1 else _WINDOW_S
            total = sum(c for _, c in self._recent)
        self.tokens_per_second.set(total / span)

    def render(self) -> bytes:
        return generate_latest(self.registry)
