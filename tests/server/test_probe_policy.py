"""Endpoint readiness probes are restricted (issue #14, finding 7): a URL on loopback or
link-local is never requested by default and viewers see no probe result for it; an allow list
limits probes to given hosts or networks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.server.live import live_server
from usina.server.guards import GuardSettings
from usina.server.probe_policy import ProbePolicy


@pytest.fixture
def inference_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback server answering /v2/health/ready with 200; yields its URL and the paths
    it was asked for."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def _listing(tmp_path: Path, guards: GuardSettings, url: str) -> dict[str, object]:
    with live_server(tmp_path, guards) as server:
        admin = server.token("default", "admin")
        viewer = server.token("default", "viewer")
        with server.client(admin) as client:
            body = {"project": "default", "url": url}
            assert client.put("/api/v1/endpoints/m", json=body).status_code == 200
        with server.client(viewer) as client:
            (item,) = client.get("/api/v1/endpoints").json()
        with server.client() as browser:
            browser.cookies.set("usina_token", viewer)
            page = browser.get("/ui/endpoints").text
        item["page"] = page
        return dict(item)


def test_loopback_endpoints_are_not_probed_by_default(
    tmp_path: Path, inference_server: tuple[str, list[str]]
) -> None:
    url, hits = inference_server
    item = _listing(tmp_path / "a", GuardSettings(), url)
    assert hits == []
    assert item["ready"] is None
    assert "not checked" in str(item["detail"])
    assert "HTTP 200" not in str(item["page"])

    # The same server is probed when the policy allows loopback: the test can fail.
    item = _listing(tmp_path / "b", GuardSettings(probe_allow_private=True), url)
    assert hits
    assert set(hits) == {"/v2/health/ready"}
    assert item["ready"] is True


def test_the_allow_list_limits_probes(
    tmp_path: Path, inference_server: tuple[str, list[str]]
) -> None:
    url, hits = inference_server
    guards = GuardSettings(probe_allow_private=True, probe_allow=("10.0.0.0/8",))
    item = _listing(tmp_path / "a", guards, url)
    assert hits == []
    assert "probe_allow" in str(item["detail"])
    guards = GuardSettings(probe_allow_private=True, probe_allow=("127.0.0.0/8",))
    assert _listing(tmp_path / "b", guards, url)["ready"] is True


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080",
        "http://[::ffff:127.0.0.1]:8080",
        "http://0.0.0.0:8080",
        "ftp://models.example",
    ],
)
def test_special_addresses_are_refused(url: str) -> None:
    assert ProbePolicy().refusal(url) is not None


def test_allowed_names_and_networks() -> None:
    policy = ProbePolicy(allow=("192.0.2.0/24", "localhost"), allow_private=True)
    assert policy.refusal("http://192.0.2.10:8000") is None
    assert policy.refusal("http://198.51.100.1:8000") is not None
    assert policy.refusal("http://localhost:8000") is None
    assert ProbePolicy().refusal("http://10.1.2.3:8000") is None  # in-cluster services
