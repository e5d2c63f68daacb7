"""The web UI without a browser (issue #18): the API docs served from the package (no CDN),
``/ui`` answering, a failed run's headline, times with their zone, model → run links, run
comparison, and actions (cancel, resume, rerun) protected by a CSRF token and audited when
refused."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

import pytest

from tests.server.conftest import Server

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


def test_api_docs_are_served_from_the_package(make_server: Callable[..., Server]) -> None:
    server = make_server(reconcile=False)
    page = server.client.get("/docs")
    assert page.status_code == 200
    assert "swagger-ui" in page.text
    assert not EXTERNAL.search(page.text), EXTERNAL.search(page.text)
    assert "://" not in page.text
    assert 'validatorUrl": null' in page.text
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    assert any(a.endswith(".js") for a in assets)
    assert any(a.endswith(".css") for a in assets)
    for asset in assets:
        fetched = server.client.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 100, asset
    assert server.client.get("/openapi.json").status_code == 200
    # No second docs page from a CDN either.
    assert server.client.get("/redoc").status_code == 404


def test_api_docs_without_their_assets_name_the_install_line(
    make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "swagger_ui_bundle", None)
    server = make_server(reconcile=False)
    page = server.client.get("/docs")
    assert page.status_code == 503
    assert "pip install 'usina[server]'" in page.json()["detail"]


def test_ui_root_leads_to_the_runs(make_server: Callable[..., Server]) -> None:
    server = make_server(reconcile=False)
    c = server.client
    for path in ("/ui", "/ui/"):
        reply = c.get(path, follow_redirects=False)
        assert reply.status_code == 303, path
        assert reply.headers["location"] == "/ui/runs"
        assert c.get(path).status_code == 200  # the sign-in page, then
    c.post("/ui/login", data={"token": server.token("default", "viewer"), "next": "/ui/runs"})
    page = c.get("/ui")
    assert page.status_code == 200
    assert str(page.url).endswith("/ui/runs")
