"""Continuous batching, proven by behaviour over real HTTP: throughput grows with concurrency,
short requests overtake long ones, a client that leaves frees its slot, the queue bound
answers 429 with Retry-After, and the token metrics move."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
import pytest

from tests.llm.llm_support import metric, start_live

pytestmark = pytest.mark.timeout(300)

PROMPT = "<|user|>Meu Pix não caiu</s><|assistant|>"


def _body(max_tokens: int, stream: bool = True) -> dict:
    return {
        "model": "tiny",
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": stream,
    }


async def _stream_tokens(client: openai.AsyncOpenAI, max_tokens: int) -> tuple[int, float]:
    """Stream one completion; (tokens generated, finish time)."""
    usage = 0
    stream = await client.completions.create(
        model=client.model, prompt=PROMPT, max_tokens=max_tokens, temperature=0.0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
    return usage, time.monotonic()


def _client(url: str, model: str) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    client.model = model  # type: ignore[attr-defined]
    return client


async def _throughput(url: str, streams: int, tokens: int) -> float:
    async with _client(url, "tiny") as client:
        started = time.monotonic()
        results = await asyncio.gather(*(_stream_tokens(client, tokens) for _ in range(streams)))
        elapsed = time.monotonic() - started
    assert [n for n, _ in results] == [tokens] * streams
    return streams * tokens / elapsed


def test_sixteen_streams_reach_four_times_one_streams_tokens_per_second(checkpoint):
    """Each forward pass costs a fixed 20 ms more, whatever the batch size, as a decode step
    does on an accelerator (memory-bound: batch 16 costs about what batch 1 does). The ratio
    then measures the scheduler, not how much spare CPU this shared machine has right now."""
    server = start_live(checkpoint, name="tiny", slow_s=0.02, max_num_seqs=32)
    try:
        asyncio.run(_throughput(server.url, 2, 4))  # warm up
        single = asyncio.run(_throughput(server.url, 1, 40))
        sixteen = asyncio.run(_throughput(server.url, 16, 40))
    finally:
        server.stop()
    print(f"1 stream: {single:.0f} tok/s, 16 streams: {sixteen:.0f} tok/s, x{sixteen / single:.1f}")
    assert sixteen >= 4 * single


@pytest.fixture(scope="module")
def live(checkpoint):
    server = start_live(checkpoint, max_num_seqs=32)
    yield server
    server.stop()


def test_a_short_request_overtakes_a_long_one(live):
    async def scenario() -> tuple[float, float]:
        async with _client(live.url, "tiny") as c:
            long_task = asyncio.create_task(_stream_tokens(c, 300))
            while live.engine.running == 0:  # the long one is generating
                await asyncio.sleep(0.005)
            _, short_done = await _stream_tokens(c, 5)
            _, long_done = await long_task
            return short_done, long_done

    short_done, long_done = asyncio.run(scenario())
    assert short_done < long_done


def test_a_disconnected_stream_frees_its_slot(checkpoint):
    server = start_live(checkpoint, name="tiny", slow_s=0.02, max_num_seqs=1)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            with http.stream("POST", "/v1/completions", json=_body(400)) as reply:
                assert reply.status_code == 200
                for line in reply.iter_lines():
                    if line.startswith("data: "):
                        break  # one token, then hang up (400 tokens would take >= 8 s)
            left = time.monotonic()
            while server.engine.running:
                assert time.monotonic() - left < 3, "the slot was not freed"
                time.sleep(0.02)
            # the only slot is free: the next request is served at once
            out = http.post("/v1/completions", json=_body(3, stream=False))
            assert out.status_code == 200
            text = http.get("/metrics").text
        assert metric(text, "usina_llm_finished_sequences_total", reason="cancelled") == 1
        assert metric(text, "usina_llm_requests_total", endpoint="completions", status="499") == 1
    finally:
        server.stop()


def test_past_the_queue_bound_the_answer_is_429_with_retry_after(checkpoint):
    # One running slot, and room in the queue for one prompt's tokens.
    prompt_tokens = 20  # well above PROMPT's length with this tokenizer, below two of them
    server = start_live(
        checkpoint, name="tiny", slow_s=0.02, max_num_seqs=1, max_queued_tokens=prompt_tokens
    )
    try:
        done = threading.Event()

        def long_request() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as h:
                h.post("/v1/completions", json=_body(60, stream=False))
            done.set()

        runner = threading.Thread(target=long_request)
        runner.start()
        while server.engine.running == 0:
            time.sleep(0.01)
        waiter = threading.Thread(target=long_request)
        waiter.start()
        while server.engine.waiting == 0:
            time.sleep(0.01)
        with (
            openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as client,
            pytest.raises(openai.RateLimitError) as refused,
        ):
            client.completions.create(model="tiny", prompt=PROMPT, max_tokens=2)
        assert refused.value.response.headers["Retry-After"] == "1"
        assert "waiting" in refused.value.message
        runner.join(60)
        waiter.join(60)
        with httpx.Client(base_url=server.url) as h:
            text = h.get("/metrics").text
        assert metric(text, "usina_llm_requests_total", endpoint="completions", status="429") == 1
        assert metric(text, "usina_llm_requests_total", endpoint="completions", status="200") == 2
    finally:
        server.stop()


def test_the_token_metrics_exist_and_move(live):
    with httpx.Client(base_url=live.url) as http:
        before = http.get("/metrics").text
        for _ in range(2):
            assert http.post("/v1/completions", json=_body(6, stream=False)).status_code == 200
        after = http.get("/metrics").text
    for name in (
        "usina_llm_time_to_first_token_seconds_count",
        "usina_llm_time_per_output_token_seconds_count",
        "usina_llm_generation_tokens_total",
        "usina_llm_prompt_tokens_total",
        "usina_llm_batch_size_count",
        "usina_llm_request_duration_seconds_count",
    ):
        assert metric(after, name) > metric(before, name), name
    assert metric(after, "usina_llm_tokens_per_second") > 0
    for gauge in ("usina_llm_queue_depth", "usina_llm_running_sequences"):
        assert f"{gauge}{{" in after, gauge
