"""The assistant pipeline: corpus -> tokenizer + tiny Llama -> perplexity -> MLflow registry.

Run it with ``usina run examples/assistant/pipeline.py`` (about ten minutes on two CPU cores;
``--param size=tiny`` trains in seconds), then serve the model with the OpenAI-compatible API:
``usina serve models:/assistant@champion``. The checkpoint is a plain ``transformers`` directory,
so the serving path is the one a real checkpoint from a registry takes.
"""

from __future__ import annotations

import io
import sys
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

import usina
from usina import Resources, pipeline, step

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from examples.assistant import corpus as gen  # noqa: E402
from examples.assistant import model as lm  # noqa: E402

MODEL_NAME = "assistant"


def _size(size: str, steps: int) -> lm.ModelSize:
    sizes = {"tiny": lm.ModelSize.tiny(), "small": lm.ModelSize()}
    if size not in sizes:
        raise ValueError(f"size {size!r} is not one of {sorted(sizes)}; pass --param size=tiny")
    chosen = sizes[size]
    return replace(chosen, steps=steps) if steps > 0 else chosen


def _pack(directory: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)
    return buf.getvalue()


def _unpack(blob: bytes, directory: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        tar.extractall(directory, filter="data")
    return directory


def _threads() -> None:
    import torch

    torch.set_num_threads(1)  # on a shared CPU more threads only contend


@step
def conversations(count: int, seed: int) -> list:
    """The synthetic bilingual support corpus, as plain JSON rows."""
    rows = [
        {"language": e.language, "topic": e.topic, "question": e.question, "answer": e.answer}
        for e in gen.generate(count, seed)
    ]
    usina.log_metric("exchanges", len(rows))
    usina.log_metric("pt_share", sum(r["language"] == "pt" for r in rows) / len(rows))
    return rows


def _exchanges(rows: list) -> list[gen.Exchange]:
    return [gen.Exchange(**r) for r in rows]


@step(resources=Resources(cpu=2, memory="2Gi"))
def train(rows: list, size: str, steps: int, holdout: float) -> bytes:
    """Tokenizer and model from scratch; returns the checkpoint directory as a tar.gz."""
    _threads()
    spec = _size(size, steps)
    train_set, _ = gen.split(_exchanges(rows), holdout)
    tokenizer = lm.train_tokenizer(
        [lm.BOS + e.question + e.answer for e in train_set], spec.vocab_size
    )
    model, report = lm.train(tokenizer, train_set, spec)
    usina.log_metric("parameters", report.parameters)
    usina.log_metric("train_seconds", report.seconds)
    usina.log_metric("final_loss", report.final_loss)
    with tempfile.TemporaryDirectory() as tmp:
        return _pack(lm.save(model, tokenizer, tmp))


@step
def evaluate(checkpoint: bytes, rows: list, holdout: float) -> dict:
    """Perplexity on the held-out exchanges, and one greedy answer per language to read."""
    _threads()
    _, held_out = gen.split(_exchanges(rows), holdout)
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = lm.load(_unpack(checkpoint, Path(tmp)))
        ppl = lm.perplexity(model, tokenizer, held_out, model.config.max_position_embeddings)
    usina.log_metric("perplexity", ppl)
    return {"perplexity": ppl, "held_out": len(held_out)}


@step(cache=False)
def register(checkpoint: bytes, report: dict, model_name: str, max_perplexity: float) -> dict:
    """Register the checkpoint; it becomes ``champion`` when its perplexity is under the bar."""
    from usina.llm.mlflow_model import log_checkpoint

    promoted = report["perplexity"] <= max_perplexity
    with tempfile.TemporaryDirectory() as tmp:
        version, uri = log_checkpoint(
            str(_unpack(checkpoint, Path(tmp))),
            name=model_name,
            metrics={"perplexity": report["perplexity"]},
            alias="champion" if promoted else "challenger",
        )
    usina.log_metric("promoted", float(promoted))
    return {"version": version, "uri": uri, "promoted": promoted, **report}


@pipeline(tracking="mlflow")
def assistant(
    count: int = 4000,
    seed: int = 7,
    size: str = "small",
    steps: int = 0,
    holdout: float = 0.05,
    model_name: str = MODEL_NAME,
    max_perplexity: float = 1000.0,
) -> None:
    """A tiny bilingual payment-support assistant, from synthetic data to the registry."""
    rows = conversations(count, seed)
    checkpoint = train(rows, size, steps, holdout)
    report = evaluate(checkpoint, rows, holdout)
    register(checkpoint, report, model_name, max_perplexity)
