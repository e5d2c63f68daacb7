"""Shared helpers of the LLM tests: a tiny checkpoint, and the server on a loopback port."""

from __future__ import annotations

import functools
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from examples.assistant import corpus
from examples.assistant import model as lm

# Small enough to build in a second, big enough that a forward pass costs more than the
# per-token bookkeeping (so batching shows, as with any real model).
TEST_SIZE = replace(
    lm.ModelSize.tiny(), hidden=128, layers=4, heads=4, kv_heads=2, intermediate=256, context=512
)


def make_checkpoint(directory: Path, *, train_steps: int = 0) -> Path:
    """A Llama checkpoint with the assistant's tokenizer and chat template (untrained unless
    ``train_steps``): what the serving path needs, in seconds."""
    import torch

    torch.set_num_threads(1)
    exchanges = corpus.generate(200, seed=3)
    tokenizer = lm.train_tokenizer(
        [lm.BOS + e.question + e.answer for e in exchanges], TEST_SIZE.vocab_size
    )
    if train_steps:
        model, _ = lm.train(tokenizer, exchanges, replace(TEST_SIZE, steps=train_steps))
    else:
        model = lm.build_model(tokenizer, TEST_SIZE)
        model.eval()
    return lm.save(model, tokenizer, directory)


def make_encoder(directory: Path) -> Path:
    """A tiny BERT encoder checkpoint (embeddings only) with a WordPiece-free byte tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    exchanges = corpus.generate(100, seed=4)
    tokenizer = lm.train_tokenizer([e.question for e in exchanges], 300)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = BertModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """The LLM ASGI app on uvicorn in a thread of the test process (real HTTP on loopback)."""

    url: str
    app: Any
    server: Any
    thread: threading.Thread

    @property
    def engine(self) -> Any:
        return self.app.state.llm.engine

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def start_live(
    checkpoint: Path | str,
    *,
    name: str = "tiny",
    slow_s: float = 0.0,
    tracking_uri: str | None = None,
    poll_interval_s: float = 0.0,
    **scheduler: Any,
) -> LiveServer:
    """Serve ``checkpoint``; ``slow_s`` adds a sleep to every forward pass (a slow model, so
    that timing margins in behaviour tests are wide on a loaded machine)."""
    import uvicorn

    from usina.llm import api
    from usina.llm.settings import LLMSettings, SchedulerSettings

    settings = LLMSettings(
        model_uri=str(checkpoint),
        name=name,
        scheduler=SchedulerSettings(**scheduler),
        tracking_uri=tracking_uri,
        poll_interval_s=poll_interval_s,
    )

    def slow_down(loaded: Any) -> None:
        if slow_s > 0:
            model = loaded.model
            forward = model.forward

            @functools.wraps(forward)  # keeps the signature the engine inspects
            def slow_forward(*args: Any, **kwargs: Any) -> Any:
                time.sleep(slow_s)
                return forward(*args, **kwargs)

            model.forward = slow_forward

    app = api.build(settings, on_loaded=slow_down)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the LLM server did not start within 30 s")
        time.sleep(0.05)
    return LiveServer(f"http://127.0.0.1:{port}", app, server, thread)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric_name = head.split("{", 1)[0]
        if metric_name != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return 0.0
