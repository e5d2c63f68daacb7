"""The scheduler against ``model.generate``: sequences that join and leave a shared,
left-padded batch produce exactly the text each would produce alone."""

from __future__ import annotations

import threading
import time

import pytest

from usina.llm import loader
from usina.llm.engine import Engine, Finished, Overloaded, TokenEvent
from usina.llm.metrics import LLMMetrics
from usina.llm.sampling import SamplingParams, TextStream
from usina.llm.settings import SchedulerSettings

PROMPTS = [
    "<|user|>Meu cartão Visa foi recusado na compra</s><|assistant|>",
    "<|user|>Hi</s><|assistant|>",
    "<|user|>I paid the boleto for order #12345 at Nubank. When does it clear?</s><|assistant|>",
    "<|user|>Posso parcelar?</s><|assistant|>",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.llm.llm_support import make_checkpoint

    path = make_checkpoint(tmp_path_factory.mktemp("trained"), train_steps=30)
    return loader.load(loader.resolve(str(path)))


def _collect(engine: Engine, prompts: list[str], max_tokens: list[int], gap_s: float):
    results: dict[int, tuple[str, Finished]] = {}
    done = threading.Event()

    def sink_for(i: int):
        parts: list[str] = []

        def sink(event):
            if isinstance(event, TokenEvent):
                parts.append(event.text)
            else:
                results[i] = ("".join(parts), event)
                if len(results) == len(prompts):
                    done.set()

        return sink

    tok = engine.lm.tokenizer
    for i, prompt in enumerate(prompts):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        params = SamplingParams(temperature=0.0)
        engine.submit(ids, params, sink_for(i), max_tokens=max_tokens[i])
        time.sleep(gap_s)  # later prompts join a batch that is already decoding
    assert done.wait(120), results
    return results


def test_batched_greedy_text_equals_generate_one_by_one(trained):
    import torch

    engine = Engine(trained, SchedulerSettings(max_num_seqs=3), LLMMetrics("t"))
    engine.start()
    try:
        lengths = [40, 12, 50, 30]
        results = _collect(engine, PROMPTS, lengths, gap_s=0.03)
    finally:
        engine.stop()
    tok = trained.tokenizer
    for i, prompt in enumerate(PROMPTS):
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = trained.model.generate(ids, max_new_tokens=lengths[i], do_sample=False)
        expected = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        text, finished = results[i]
        assert text == expected, (i, text, expected)
        assert finished.reason in ("stop", "length")
        assert finished.prompt_tokens == ids.shape[1]


def _one_seeded(engine: Engine, company: int) -> str:
    """A seeded sample of PROMPTS[0], next to ``company`` unseeded sequences."""
    tok = engine.lm.tokenizer
    parts: list[str] = []
    done = threading.Event()

    def sink(event) -> None:
        if isinstance(event, TokenEvent):
            parts.append(event.text)
        else:
            done.set()

    for j in range(company):
        ids = tok(PROMPTS[j % 4], add_special_tokens=False)["input_ids"]
        engine.submit(ids, SamplingParams(temperature=1.0), lambda e: None, max_tokens=20)
    ids = tok(PROMPTS[0], add_special_tokens=False)["input_ids"]
    params = SamplingParams(temperature=0.9, top_p=0.9, seed=42, ignore_eos=True)
    engine.submit(ids, params, sink, max_tokens=25)
    assert done.wait(60)
    return "".join(parts)


def test_seeded_sampling_repeats_whatever_shares_the_batch(trained):
    engine = Engine(trained, SchedulerSettings(max_num_seqs=8), LLMMetrics("t"))
    engine.start()
    try:
        alone, crowded = _one_seeded(engine, 0), _one_seeded(engine, 3)
    finally:
        engine.stop()
    assert alone == crowded
    assert alone


def test_queue_bound_refuses_with_retry_after(trained):
    engine = Engine(  # not started: nothing leaves the queue
        trained, SchedulerSettings(max_num_seqs=1, max_queued_tokens=10, retry_after_s=3),
        LLMMetrics("t"),
    )  # fmt: skip
    engine.submit([5, 6, 7, 8, 9, 10], SamplingParams(), lambda e: None, max_tokens=5)
    with pytest.raises(Overloaded) as refused:
        engine.submit([5, 6, 7, 8, 9], SamplingParams(), lambda e: None, max_tokens=5)
    assert refused.value.retry_after == 3
    assert "retry" in str(refused.value)


def test_text_stream_cuts_at_a_stop_string_and_never_sends_its_prefix(trained):
    tok = trained.tokenizer
    ids = tok("Hello world. STOP here", add_special_tokens=False)["input_ids"]
    stream = TextStream(tok, ("STOP",))
    sent = ""
    for token in ids:
        sent += stream.push(token)
        assert "S" not in sent.replace("Hello world. ", "", 1) or stream.stopped
        if stream.stopped:
            break
    sent += stream.flush()
    assert stream.stopped
    assert sent == "Hello world. "
