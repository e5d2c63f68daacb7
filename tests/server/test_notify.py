"""Webhook notifications against a receiver on 127.0.0.1: a failed run is announced once, with
retries when the receiver first answers 500; the token travels by reference; Slack's format;
a restarted notifier (a fresh object on the same store) does not send it again."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from usina.engine.records import RunId, RunRecord, RunState
from usina.server.notify import FAILED, RETRY, SENT, Notifier, Webhook
from usina.stores.sql import SqlMetadataStore


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, object]] = []
        self.headers: list[dict[str, str]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(data))
                receiver.headers.append(dict(self.headers))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def store(tmp_path: Path):
    s = SqlMetadataStore(f"sqlite:///{tmp_path}/usina.db")
    yield s
    s.close()


def finished_run(store: SqlMetadataStore, state: RunState, run_id: str = "fraud-1") -> RunRecord:
    run = RunRecord(
        id=RunId(run_id), pipeline="fraud", plan={"pipeline": "fraud", "params": {}, "nodes": []},
        params={}, state=RunState.PENDING, created_at=1000.0, project="risk",
    )  # fmt: skip
    store.create_run(run, [])
    run = replace(run, state=state, finished_at=1010.0, error="step train failed: oom")
    store.save_run(run)
    return run


def kinds(store: SqlMetadataStore, run_id: str) -> list[str]:
    return [e.kind for e in store.list_events(run_id) if (e.node or "").startswith("webhook:")]


def test_a_failure_is_announced_once_with_retries(store, monkeypatch) -> None:
    receiver = Receiver(fail_first=2)
    monkeypatch.setenv("OPS_HOOK_TOKEN", "s3cret")
    hook = Webhook.parse(f"{receiver.url};on=failed;token-env=OPS_HOOK_TOKEN;name=ops")
    finished_run(store, RunState.FAILED)
    try:
        notifier = Notifier(store, (hook,), base_url="https://usina.example", backoff=1.0)
        assert notifier.run_once(now=1011.0) == 0  # 500
        assert notifier.run_once(now=1011.5) == 0  # backing off: not called
        assert notifier.run_once(now=1012.1) == 0  # 500 again
        assert notifier.run_once(now=1014.2) == 1  # delivered
        assert kinds(store, "fraud-1") == [RETRY, RETRY, SENT]
        again = Notifier(store, (hook,))  # a restarted server
        assert again.run_once(now=1100.0) == 0
        (sent,) = receiver.bodies
        assert sent["run"] == "fraud-1"
        assert sent["state"] == "failed"
        assert sent["error"] == "step train failed: oom"
        assert sent["link"] == "https://usina.example/ui/runs/fraud-1"
        assert receiver.headers[0]["Authorization"] == "Bearer s3cret"
        assert "s3cret" not in json.dumps([e.message for e in store.list_events("fraud-1")])
    finally:
        receiver.close()


def test_slack_format_and_states_a_hook_is_not_for(store) -> None:
    receiver = Receiver()
    hook = Webhook.parse(f"{receiver.url};on=succeeded;format=slack")
    finished_run(store, RunState.FAILED, "fraud-1")
    finished_run(store, RunState.SUCCEEDED, "fraud-2")
    try:
        assert Notifier(store, (hook,)).run_once(now=1011.0) == 1
        (sent,) = receiver.bodies
        assert "fraud-2" in str(sent["text"])
        assert "succeeded" in str(sent["text"])
    finally:
        receiver.close()


def test_a_receiver_that_never_answers_gives_up(store) -> None:
    hook = Webhook.parse("http://127.0.0.1:9;name=dead")  # nothing listens on port 9
    hook = replace(hook, max_tries=2)
    finished_run(store, RunState.FAILED)
    notifier = Notifier(store, (hook,), backoff=0.0, timeout=2.0)
    for now in (1011.0, 1012.0, 1013.0):
        notifier.run_once(now=now)
    assert kinds(store, "fraud-1") == [RETRY, FAILED]


@pytest.mark.parametrize(
    "text", ["ftp://x", "http://x;on=exploded", "http://x;format=xml", "http://x;bogus=1"]
)
def test_bad_webhook_settings_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="webhook"):
        Webhook.parse(text)
