"""The continuous-batching scheduler: one thread owns the model and runs decode steps.

At every iteration the loop (1) runs queued side jobs (embeddings), (2) drops sequences whose
client went away, (3) admits waiting sequences up to ``max_num_seqs`` running and
``max_prefill_tokens`` of prompt, prefills them together and samples their first token, then
(4) decodes one token for every running sequence in a single batched forward pass. Finished
sequences leave the batch at once and their slot is free for the next iteration: nobody waits
for the longest sequence in a batch. Each sequence's KV cache is its rows of the shared
left-padded cache (:mod:`usina.llm.kv`).

Requests enter through :meth:`Engine.submit`, which refuses (:class:`Overloaded`, HTTP 429)
when the prompt tokens already waiting would pass ``max_queued_tokens``. Output goes to a
per-sequence callback, called from the engine thread; the HTTP layer forwards it to its event
loop.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from usina.errors import UsinaError
from usina.llm import kv
from usina.llm.sampling import SamplingParams, TextStream, sample_rows

if TYPE_CHECKING:
    from collections.abc import Callable

    from usina.llm.loader import LoadedLM
    from usina.llm.metrics import LLMMetrics
    from usina.llm.settings import SchedulerSettings

log = logging.getLogger(__name__)


class Overloaded(UsinaError):
    """The queue bound is reached: come back in ``retry_after`` seconds (HTTP 429)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadRequest(UsinaError):
    """The request cannot be served as asked (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """New text for the client (may be empty only at the end)."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The sequence left the batch: ``stop``, ``length``, ``cancelled`` or ``error``."""

    reason: str
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


Event = TokenEvent | Finished


class Sequence:
    """One request's generation state; only the engine thread mutates it (but ``cancel``)."""

    __slots__ = (
        "arrived",
        "cancelled",
        "first_at",
        "generator",
        "id",
        "last_token",
        "length",
        "max_tokens",
        "params",
        "prompt_ids",
        "sink",
        "stream",
        "tokens",
    )

    def __init__(
        self,
        seq_id: int,
        prompt_ids: list[int],
        params: SamplingParams,
        max_tokens: int,
        sink: Callable[[Event], None],
        tokenizer: Any,
    ) -> None:
        self.id = seq_id
        self.prompt_ids = prompt_ids
        self.params = params
        self.max_tokens = max_tokens
        self.sink = sink
        self.arrived = time.monotonic()
        self.first_at: float | None = None
        self.tokens = 0
        self.length = len(prompt_ids)
        self.last_token = -1
        self.stream = TextStream(tokenizer, params.stop)
        self.generator = params.generator()
        self.cancelled = False

    def cancel(self) -> None:
        """Leave the batch at the next step (the client went away); safe from any thread."""
        self.cancelled = True


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class Engine:
    """Owns the model; everything that touches it runs on the engine thread."""

    def __init__(self, lm: LoadedLM, settings: SchedulerSettings, metrics: LLMMetrics) -> None:
        self.lm = lm
        self.settings = settings
        self.metrics = metrics
        self.max_len = settings.max_model_len or lm.max_len
        config = lm.model.config
        generation = getattr(lm.model, "generation_config", None)  # encoders have none
        eos = getattr(generation, "eos_token_id", None) or getattr(config, "eos_token_id", None)
        ids = eos if isinstance(eos, list) else [eos]
        if lm.tokenizer.eos_token_id is not None:
            ids.append(lm.tokenizer.eos_token_id)
        self.eos = frozenset(int(i) for i in ids if i is not None)
        self.pad = int(lm.tokenizer.pad_token_id or 0)
        # transformers 5.x renamed the forward argument ``past_key_values`` to ``cache``.
        params = inspect.signature(lm.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._cond = threading.Condition()
        self._waiting: deque[Sequence] = deque()
        self._waiting_tokens = 0
        self._jobs: deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = deque()
        self._running: list[Sequence] = []
        self._batch: kv.BatchCache | None = None
        self._ids = itertools.count(1)
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- the public side (any thread) -------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="usina-llm-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def drain(self, timeout: float) -> None:
        """Stop taking work, let the sequences already here finish (``timeout`` at most),
        then stop; what is left is cancelled."""
        deadline = time.monotonic() + timeout
        while (self._running or self._waiting) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop()

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        sink: Callable[[Event], None],
        *,
        max_tokens: int | None,
    ) -> Sequence:
        """Queue a sequence; raises :class:`BadRequest` or :class:`Overloaded`."""
        if not self.lm.generative:
            raise BadRequest(f"model {self.lm.name!r} is an encoder: it serves /v1/embeddings")
        n = len(prompt_ids)
        if n == 0:
            raise BadRequest("the prompt is empty")
        room = self.max_len - n
        if room < 1:
            raise BadRequest(
                f"the prompt has {n} tokens; this model's context is {self.max_len} tokens"
            )
        if max_tokens is None:
            max_tokens = min(self.settings.default_max_tokens, room)
        elif max_tokens > room:
            raise BadRequest(
                f"this model's maximum context length is {self.max_len} tokens; the prompt "
                f"({n}) plus max_tokens ({max_tokens}) asks for {n + max_tokens}: lower max_tokens"
            )
        bound = self.settings.max_queued_tokens
        if n > bound:
            raise BadRequest(f"the prompt has {n} tokens, more than the queue bound ({bound})")
        seq = Sequence(next(self._ids), prompt_ids, params, max_tokens, sink, self.lm.tokenizer)
        with self._cond:
            if self._waiting_tokens + n > bound:
                raise Overloaded(
                    f"{len(self._waiting)} requests ({self._waiting_tokens} prompt tokens) are "
                    f"already waiting for a slot (bound {bound}); retry later",
                    self.settings.retry_after_s,
                )
            self._waiting.append(seq)
            self._waiting_tokens += n
            self.metrics.waiting.set(len(self._waiting))
            self._cond.notify_all()
        return seq

    def run_job(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run ``fn`` on the engine thread between two steps (the model is not shared)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._cond:
            self._jobs.append((fn, future))
            self._cond.notify_all()
        return future

    # -- the engine thread ------------------------------------------------------------------

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._stop or self._waiting or self._jobs or self._running):
                        self._cond.wait()
                    if self._stop:
                        break
                    jobs = list(self._jobs)
                    self._jobs.clear()
                    admitted = self._admit()
                for fn, future in jobs:
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(fn())
                        except Exception as exc:
                            future.set_exception(exc)
                try:
                    self._step(admitted)
                except Exception as exc:
                    log.exception("generation step failed; failing the sequences in it")
                    involved = {s.id: s for s in [*self._running, *admitted]}
                    for seq in involved.values():
                        self._finish(seq, "error", error=f"{type(exc).__name__}: {exc}")
                    self._running, self._batch = [], None
                self.metrics.running.set(len(self._running))
        for seq in [*self._running, *self._waiting]:
            self._finish(seq, "cancelled", error="the server is shutting down")

    def _admit(self) -> list[Sequence]:
        """Waiting sequences that fit (called holding the lock)."""
        admitted: list[Sequence] = []
        tokens = 0
        slots = self.settings.max_num_seqs - len(self._running)
        while self._waiting and len(admitted) < slots:
            seq = self._waiting[0]
            if seq.cancelled:
                self._waiting.popleft()
                self._waiting_tokens -= len(seq.prompt_ids)
                self._finish(seq, "cancelled")
                continue
            n = len(seq.prompt_ids)
            if admitted and tokens + n > self.settings.max_prefill_tokens:
                break
            self._waiting.popleft()
            self._waiting_tokens -= n
            admitted.append(seq)
            tokens += n
        self.metrics.waiting.set(len(self._waiting))
        return admitted

    def _step(self, admitted: list[Sequence]) -> None:
        gone = [i for i, s in enumerate(self._running) if s.cancelled]
        if gone:
            for i in gone:
                self._finish(self._running[i], "cancelled")
            self._keep([i for i, s in enumerate(self._running) if not s.cancelled])
        if admitted:
            self._prefill(admitted)
        if self._running:
            self._decode()

    def _keep(self, rows: list[int]) -> None:
        self._running = [self._running[i] for i in rows]
        self._batch = kv.select(self._batch, rows) if self._batch is not None else None

    def _prefill(self, seqs: list[Sequence]) -> None:
        width = max(len(s.prompt_ids) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, width - len(seq.prompt_ids) :] = torch.tensor(seq.prompt_ids)
            mask[i, width - len(seq.prompt_ids) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.lm.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = _cache_of(out)
        self.metrics.prompt_tokens.inc(int(mask.sum()))
        tokens = sample_rows(
            out.logits[:, -1, :], [s.params for s in seqs], [s.generator for s in seqs]
        )
        keep = [i for i, seq in enumerate(seqs) if not self._emit(seq, tokens[i])]
        self.metrics.tokens(len(seqs))
        new = kv.select(kv.BatchCache(cache, mask), keep)
        if new is not None:
            self._running.extend(seqs[i] for i in keep)
            self._batch = kv.merge(self._batch, new)

    def _decode(self) -> None:
        batch = self._batch
        assert batch is not None  # the running list and the cache move together
        ids = torch.tensor([[s.last_token] for s in self._running], dtype=torch.long)
        mask = batch.extend_mask()
        positions = mask.sum(dim=1, keepdim=True) - 1
        out = self.lm.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_arg: batch.cache},
        )
        batch.cache = _cache_of(out)
        self.metrics.batch_size.observe(len(self._running))
        tokens = sample_rows(
            out.logits[:, -1, :],
            [s.params for s in self._running],
            [s.generator for s in self._running],
        )
        self.metrics.tokens(len(tokens))
        keep = [i for i, seq in enumerate(self._running) if not self._emit(seq, tokens[i])]
        if len(keep) != len(self._running):
            self._keep(keep)

    def _emit(self, seq: Sequence, token: int) -> bool:
        """Hand ``token`` to its sequence; True when the sequence is finished."""
        now = time.monotonic()
        if seq.first_at is None:
            seq.first_at = now
            self.metrics.ttft.observe(now - seq.arrived)
        seq.tokens += 1
        seq.length += 1
        seq.last_token = token
        reason: str | None = None
        if token in self.eos and not seq.params.ignore_eos:
            reason = "stop"
        else:
            text = seq.stream.push(token)
            if text:
                seq.sink(TokenEvent(text))
            if seq.stream.stopped:
                reason = "stop"
            elif seq.tokens >= seq.max_tokens or seq.length >= self.max_len:
                reason = "length"
        if reason is None:
            return False
        self._finish(seq, reason)
        return True

    def _finish(self, seq: Sequence, reason: str, error: str | None = None) -> None:
        now = time.monotonic()
        rest = seq.stream.flush() if reason in ("stop", "length") else ""
        if rest:
            seq.sink(TokenEvent(rest))
        if reason in ("stop", "length") and seq.first_at is not None:
            self.metrics.e2e.observe(now - seq.arrived)
            if seq.tokens > 1:
                self.metrics.tpot.observe((now - seq.first_at) / (seq.tokens - 1))
        self.metrics.finished.labels(self.metrics.model, reason).inc()
        seq.sink(Finished(reason, len(seq.prompt_ids), seq.tokens, error))
