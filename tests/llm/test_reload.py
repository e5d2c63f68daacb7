"""Hot reload, as the V2 server does it: when the alias moves, the new version loads beside
the old one, new requests go to it, and a stream already running on the old one finishes."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.llm.llm_support import start_live

pytestmark = pytest.mark.timeout(300)


def test_a_moved_alias_switches_versions_without_cutting_a_stream(
    checkpoint, tmp_path, monkeypatch
):
    from mlflow import MlflowClient

    from usina.llm.mlflow_model import log_checkpoint

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert log_checkpoint(str(checkpoint), name="asst", tracking_uri=uri)[0] == "1"
    assert log_checkpoint(str(checkpoint), name="asst", alias=None, tracking_uri=uri)[0] == "2"
    import mlflow

    # The pyfunc face of the logged model works too. The registry URI is process-wide in MLflow
    # (a module global and an environment variable every later subprocess would inherit), so it
    # is set for this block only and both are put back.
    from mlflow.tracking._model_registry import utils as registry_utils

    monkeypatch.setattr(registry_utils, "_registry_uri", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    answers = mlflow.pyfunc.load_model("models:/asst/1").predict(["Pix", "Boleto"])
    monkeypatch.undo()
    assert len(answers) == 2
    assert all(isinstance(a, str) for a in answers)

    server = start_live(
        "models:/asst@champion", name="asst", tracking_uri=uri, poll_interval_s=0.2, slow_s=0.02
    )
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            assert http.get("/v1/models").json()["data"][0]["root"] == "asst/1"
            body = {"model": "asst", "prompt": "Pix", "max_tokens": 60, "temperature": 0.0,
                    "ignore_eos": True}  # fmt: skip
            finished: dict[str, object] = {}

            def long_request() -> None:
                with httpx.Client(base_url=server.url, timeout=120) as h:
                    finished["reply"] = h.post("/v1/completions", json=body).json()

            runner = threading.Thread(target=long_request)
            runner.start()
            while server.engine.running == 0:
                time.sleep(0.01)
            old_engine = server.engine

            MlflowClient(uri).set_registered_model_alias("asst", "champion", "2")
            deadline = time.monotonic() + 90
            while http.get("/v1/models").json()["data"][0]["root"] != "asst/2":
                assert time.monotonic() < deadline, "the server did not switch to version 2"
                time.sleep(0.1)
            assert server.engine is not old_engine
            short = http.post("/v1/completions", json={**body, "max_tokens": 2})
            assert short.status_code == 200
            runner.join(120)
        reply = finished["reply"]
        assert reply["usage"]["completion_tokens"] == 60  # the old version finished it
        assert reply["choices"][0]["finish_reason"] == "length"
    finally:
        server.stop()
