"""The tiny assistant: a byte-level BPE tokenizer and a Llama-architecture causal LM trained on
the support corpus, saved as a plain ``transformers`` checkpoint directory.

The checkpoint is what a real model from a registry looks like (``config.json``, weights,
``tokenizer.json`` with a chat template), so ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load it and usina serves it on the same code path as any
other causal LM. ``ModelSize`` holds the few knobs: ``ModelSize.tiny()`` trains in seconds for
tests, the default (a few million parameters) in minutes on two CPU cores.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from examples.assistant.corpus import Exchange

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
# Each turn is ``<|role|>text</s>``; generation starts after ``<|assistant|>`` and stops at </s>.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True, slots=True)
class ModelSize:
    """Tokenizer and model dimensions, and how long to train."""

    vocab_size: int = 2048  # BPE vocabulary, special tokens included
    hidden: int = 192  # model width
    layers: int = 4  # decoder blocks
    heads: int = 6  # attention heads (head size hidden / heads)
    kv_heads: int = 2  # grouped-query attention: key/value heads
    intermediate: int = 512  # MLP width
    context: int = 256  # longest sequence, tokens
    steps: int = 600  # optimizer steps
    batch: int = 16  # sequences per step
    lr: float = 3e-3  # peak learning rate (cosine decay, short warm-up)
    seed: int = 7

    @classmethod
    def tiny(cls) -> ModelSize:
        """A few hundred thousand parameters and a few dozen steps: seconds, for tests."""
        return cls(
            vocab_size=384, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128,
            context=128, steps=40, batch=8, lr=5e-3,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (any UTF-8 text encodes: no unknown tokens), wrapped as a
    ``PreTrainedTokenizerFast`` with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def render(tokenizer: Any, exchange: Exchange) -> str:
    text: str = tokenizer.apply_chat_template(exchange.messages(), tokenize=False)
    return BOS + text


def build_model(tokenizer: Any, size: ModelSize) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(size.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        max_position_embeddings=size.context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def _encode(tokenizer: Any, exchanges: list[Exchange], context: int) -> list[list[int]]:
    ids: list[list[int]] = [
        tokenizer(render(tokenizer, e), add_special_tokens=False)["input_ids"][:context]
        for e in exchanges
    ]
    return ids


def _batch(rows: list[list[int]], pad: int) -> tuple[Any, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


@dataclass(frozen=True, slots=True)
class TrainReport:
    parameters: int
    steps: int
    seconds: float
    final_loss: float


def train(tokenizer: Any, exchanges: list[Exchange], size: ModelSize) -> tuple[Any, TrainReport]:
    """Next-token training on whole rendered exchanges (padding ignored in the loss)."""
    import random

    import torch

    model = build_model(tokenizer, size)
    rows = _encode(tokenizer, exchanges, size.context)
    rng = random.Random(size.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=size.lr, weight_decay=0.01)
    warmup = max(1, size.steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, size.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, schedule)
    model.train()
    started = time.perf_counter()
    loss_value = float("nan")
    for _ in range(size.steps):
        ids, mask = _batch(rng.sample(rows, min(size.batch, len(rows))), tokenizer.pad_token_id)
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        loss_value = float(loss.detach())
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    return model, TrainReport(params, size.steps, time.perf_counter() - started, loss_value)


def perplexity(model: Any, tokenizer: Any, exchanges: list[Exchange], context: int) -> float:
    """exp(mean next-token loss) over every token of the held-out exchanges."""
    import torch

    rows = _encode(tokenizer, exchanges, context)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), 16):
            ids, mask = _batch(rows[start : start + 16], tokenizer.pad_token_id)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            target = ids[:, 1:]
            keep = mask[:, 1:].bool()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
            ).reshape(target.shape)
            total += float(nll[keep].sum())
            count += int(keep.sum())
    return math.exp(total / max(1, count))


def save(model: Any, tokenizer: Any, directory: str | Path) -> Path:
    """A ``transformers`` checkpoint directory: what ``from_pretrained`` reads."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load(directory: str | Path) -> tuple[Any, Any]:
    """The real ``transformers`` loading path, as any served model is loaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(directory)
    model.eval()
    return model, AutoTokenizer.from_pretrained(directory)
