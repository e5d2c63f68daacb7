"""Choosing the next token per sequence, and turning token ids into text with stop strings.

Every sequence has its own temperature, top-p and seed (a ``torch.Generator`` of its own, so a
seeded request gives the same text whatever else shares its batch). :class:`TextStream` decodes
incrementally: it holds back an unfinished UTF-8 character and any tail that could still become
a stop string, so a client never receives text that is later cut.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """What one request asks of generation (the OpenAI fields of the same names)."""

    max_tokens: int = 128
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # vLLM's extension: run to max_tokens (benchmarks, tests)

    def generator(self) -> torch.Generator | None:
        if self.temperature == 0.0:
            return None
        gen = torch.Generator()
        gen.manual_seed(self.seed if self.seed is not None else random.getrandbits(63))
        return gen


def sample_rows(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[int]:
    """One token per row of ``logits`` ([batch, vocab])."""
    greedy = logits.argmax(dim=-1).tolist()
    out: list[int] = []
    for i, p in enumerate(params):
        gen = generators[i]
        if p.temperature == 0.0 or gen is None:
            out.append(int(greedy[i]))
            continue
        probs = torch.softmax(logits[i].float() / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            cumulative = sorted_p.cumsum(0)
            cut = cumulative - sorted_p > p.top_p  # keep the smallest set reaching top_p
            sorted_p = sorted_p.masked_fill(cut, 0.0)
            choice = torch.multinomial(sorted_p, 1, generator=gen)
            out.append(int(order[choice]))
        else:
            out.append(int(torch.multinomial(probs, 1, generator=gen)))
    return out


class TextStream:
    """Incremental detokenization with stop strings.

    Each token decodes only a short window (the tokens since the last emitted text, plus the
    ones before them for context), so the cost per token does not grow with the length of the
    completion; a window that ends inside a UTF-8 character waits for its next byte."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self._prefix = 0  # window start: context for the decoder
        self._read = 0  # tokens before this are in ``text``
        self.sent = 0  # characters of ``text`` already handed out
        self.text = ""
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def _advance(self, final: bool = False) -> None:
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)

    def push(self, token: int) -> str:
        """Add a token; return the text that is now safe to send (maybe empty)."""
        self.ids.append(token)
        self._advance()
        return self._release()

    def flush(self) -> str:
        """Whatever was held back, at the end of generation."""
        if not self.stopped:
            self._advance(final=True)
        return self._release(final=True)

    def _release(self, final: bool = False) -> str:
        if not self.stopped:
            for stop in self.stop:
                at = self.text.find(stop, max(0, self.sent - len(stop)))
                if at != -1:
                    self.text = self.text[:at]
                    self.stopped = True
        safe = len(self.text)
        if not (self.stopped or final):
            for stop in self.stop:  # hold back a tail that may still grow into a stop string
                for k in range(min(len(stop) - 1, safe), 0, -1):
                    if self.text[safe - k : safe] == stop[:k]:
                        safe -= k
                        break
        if safe <= self.sent:
            return ""
        piece = self.text[self.sent : safe]
        self.sent = safe
        return piece
