"""The official ``openai`` client against ``usina serve`` (a real subprocess, real HTTP):
completions, chat, streaming, embeddings, and OpenAI-shaped errors."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.llm.llm_support import make_encoder, start_live

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def client(served: str):
    with openai.OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_models_lists_the_served_model(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["assistant"]


def test_completion_respects_max_tokens_and_reports_usage(client):
    out = client.completions.create(
        model="assistant", prompt="Olá, meu cartão", max_tokens=7, temperature=0.0,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert out.object == "text_completion"
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 7
    assert out.usage.total_tokens == out.usage.prompt_tokens + 7
    again = client.completions.create(
        model="assistant", prompt="Olá, meu cartão", max_tokens=7, temperature=0.0,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert again.choices[0].text == out.choices[0].text  # greedy is deterministic


def test_seed_makes_sampling_repeatable(client):
    texts = {
        client.completions.create(
            model="assistant", prompt="Pix", max_tokens=12, temperature=1.0, top_p=0.9, seed=11,
            extra_body={"ignore_eos": True},
        ).choices[0].text
        for _ in range(2)
    }  # fmt: skip
    assert len(texts) == 1


def test_chat_completion_uses_the_chat_template(client):
    out = client.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": "Meu cartão foi recusado"}],
        max_tokens=5,
        temperature=0.0,
        extra_body={"ignore_eos": True},
    )
    assert out.object == "chat.completion"
    assert out.choices[0].message.role == "assistant"
    assert out.usage.completion_tokens == 5
    assert out.usage.prompt_tokens > 5  # the template's role tokens are in the prompt


def test_chat_stream_sends_deltas_then_usage_then_done(client):
    stream = client.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": "I was charged twice"}],
        max_tokens=9,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "length"
    assert set(finals[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 9
    full = client.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": "I was charged twice"}],
        max_tokens=9,
        temperature=0.0,
        extra_body={"ignore_eos": True},
    )
    assert text == full.choices[0].message.content


def test_completion_stream_and_stop_string(client):
    full = client.completions.create(
        model="assistant", prompt="Boleto", max_tokens=20, temperature=0.0,
        extra_body={"ignore_eos": True},
    ).choices[0].text  # fmt: skip
    stop = full[3:5]
    assert stop.strip(), full  # an untrained model still writes some text
    pieces = [
        c.choices[0].text
        for c in client.completions.create(
            model="assistant", prompt="Boleto", max_tokens=20, temperature=0.0, stop=[stop],
            stream=True, extra_body={"ignore_eos": True},
        )
    ]  # fmt: skip
    assert "".join(pieces) == full[: full.index(stop)]


def test_embeddings_from_the_causal_lm(client):
    out = client.embeddings.create(model="assistant", input=["estorno", "refund", "estorno"])
    vectors = [d.embedding for d in out.data]
    assert len(vectors) == 3
    assert len(vectors[0]) == 128
    assert vectors[0] == pytest.approx(vectors[2])
    assert sum(v * v for v in vectors[0]) == pytest.approx(1.0, rel=1e-4)


def test_errors_have_the_openai_shape(client, served):
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="gpt-4", prompt="hi", max_tokens=1)
    assert "assistant" in missing.value.message
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model="assistant", prompt="hi", max_tokens=100_000)
    assert "max_tokens" in too_long.value.message
    reply = httpx.post(f"{served}/v1/completions", json={"model": "assistant", "prompt": 3})
    assert reply.status_code == 400
    assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


def test_an_encoder_serves_embeddings_and_refuses_completions(tmp_path):
    server = start_live(make_encoder(tmp_path / "enc"), name="encoder")
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        floats = client.embeddings.create(
            model="encoder", input="chargeback", encoding_format="float"
        )
        out = client.embeddings.create(model="encoder", input="chargeback")  # base64
        assert out.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-6)
        assert len(out.data[0].embedding) == 32
        assert out.usage.prompt_tokens > 0
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(model="encoder", prompt="hi", max_tokens=2)
        assert "embeddings" in refused.value.message
    finally:
        client.close()
        server.stop()


def test_api_key_is_required_when_set(checkpoint):
    from starlette.testclient import TestClient

    from usina.llm import api, loader
    from usina.llm.engine import Engine
    from usina.llm.metrics import LLMMetrics
    from usina.llm.settings import SchedulerSettings

    lm = loader.load(loader.resolve(str(checkpoint)), "k")
    metrics = LLMMetrics("k")
    app = api.create_app(Engine(lm, SchedulerSettings(), metrics), metrics, api_key="s3cret")
    with TestClient(app) as http:
        assert http.get("/v1/models").status_code == 401
        ok = http.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert http.get("/health").status_code == 200
