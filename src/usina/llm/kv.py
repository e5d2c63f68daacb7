"""Batched KV-cache surgery: sequences of different lengths share one left-padded cache.

The running batch keeps one ``transformers`` ``DynamicCache`` whose tensors are
``[batch, kv_heads, length, head_dim]`` per layer, plus a ``[batch, length]`` attention mask
with zeros over each sequence's left padding. A decode step appends one column for everyone
(the model does it). Only when the batch changes is the cache copied: :func:`merge` left-pads
the shorter of two caches and concatenates the new sequences' rows; :func:`select` keeps some
rows and drops the leading columns that became padding for every row that is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def _layers(cache: Any) -> list[Any]:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(
            f"{type(cache).__name__} has no per-layer tensors (.layers); usina.llm needs "
            "transformers>=4.56: pip install -U 'usina[llm]'"
        )
    return list(layers)


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


@dataclass(slots=True)
class BatchCache:
    """The running batch's cache and attention mask; row ``i`` is the ``i``-th sequence."""

    cache: Any
    mask: torch.Tensor  # [batch, length], long, 0 over left padding

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def positions(self) -> torch.Tensor:
        """The position of each row's next token: how many real tokens it holds."""
        return self.mask.sum(dim=1, keepdim=True)

    def extend_mask(self) -> torch.Tensor:
        """The mask for a decode step (one more real column); becomes the batch's mask."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.rows, 1))], dim=1)
        return self.mask


def merge(running: BatchCache | None, new: BatchCache) -> BatchCache:
    """``running`` followed by ``new``'s rows, both left-padded to the longer length."""
    if running is None or running.rows == 0:
        return new
    width = max(running.length, new.length)
    for old_layer, new_layer in zip(_layers(running.cache), _layers(new.cache), strict=True):
        old_layer.keys = torch.cat(
            [_pad_left(old_layer.keys, width, 2), _pad_left(new_layer.keys, width, 2)], dim=0
        )
        old_layer.values = torch.cat(
            [_pad_left(old_layer.values, width, 2), _pad_left(new_layer.values, width, 2)], dim=0
        )
    running.mask = torch.cat([_pad_left(running.mask, width, 1), _pad_left(new.mask, width, 1)])
    return running


def select(batch: BatchCache, keep: list[int]) -> BatchCache | None:
    """Only rows ``keep`` (in that order); None when nothing is left."""
    if not keep:
        return None
    if keep == list(range(batch.rows)):
        return batch
    index = torch.tensor(keep, dtype=torch.long)
    mask = batch.mask.index_select(0, index)
    real = mask.any(dim=0).nonzero()
    start = int(real[0]) if real.numel() else 0
    for layer in _layers(batch.cache):
        layer.keys = layer.keys.index_select(0, index)[:, :, start:, :]
        layer.values = layer.values.index_select(0, index)[:, :, start:, :]
    batch.mask = mask[:, start:]
    return batch
