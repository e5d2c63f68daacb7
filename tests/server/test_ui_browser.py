"""The web UI in Debian's headless Chromium (Playwright): sign in, the runs list, a run whose
step failed once and was retried — its DAG, failure class and log lines — then Portuguese.
Screenshots go to test-output/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.server.conftest import write_pipelines

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing; `make browser` installs it", pytrace=False)
    pipelines = write_pipelines(tmp_path)
    env = {**os.environ, "USINA_HOME": str(tmp_path / ".usina"), "PYTHONUNBUFFERED": "1"}
    for name in ("USINA_DATABASE_URL", "USINA_ARTIFACTS_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    cli = [sys.executable, "-m", "usina.cli.main"]
    token = subprocess.run(
        [*cli, "token", "create", "--project", "default", "--role", "editor", "--name", "ana"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    port = _port()
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [*cli, "server", "--port", str(port), "--pipelines", str(pipelines)],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
        yield url, token, client, tmp_path
        client.close()
    finally:
        proc.terminate()
        proc.wait(20)


def _finished(client: httpx.Client, run_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        if run["state"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish")


def test_runs_list_run_page_and_portuguese(server):
    url, token, client, home = server
    retried = client.post(
        "/api/v1/runs",
        json={"pipeline": "demo", "params": {"n": 12, "marker": str(home / "marker")}},
    ).json()["id"]
    assert _finished(client, retried)["state"] == "succeeded"
    failed = client.post("/api/v1/runs", json={"pipeline": "failing"}).json()["id"]
    assert _finished(client, failed)["state"] == "failed"
    OUTPUT.mkdir(exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(locale="en-US", viewport={"width": 1280, "height": 1400})
            page.goto(f"{url}/ui/runs")
            expect(page).to_have_url(f"{url}/ui/login?next=/ui/runs")
            page.fill("input[name=token]", token)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{url}/ui/runs")
            expect(page.locator(f"tr[data-run='{retried}'] .state")).to_have_text("succeeded")
            expect(page.locator(f"tr[data-run='{failed}'] .state")).to_have_text("failed")
            page.screenshot(path=str(OUTPUT / "ui-runs.png"), full_page=True)

            page.click(f"a[href='/ui/runs/{retried}']")
            expect(page.locator("h1")).to_contain_text(retried)
            nodes = page.locator("svg.dag g.node")
            expect(nodes).to_have_count(3)
            expect(page.locator("svg.dag g.node[data-step='train']")).to_have_class(
                "node s-succeeded"
            )
            expect(page.locator("svg.dag path.edge")).to_have_count(2)
            first = page.locator(f"section[data-attempt='{retried}-train-1']")
            expect(first).to_contain_text("user_error")
            expect(first.locator("pre.log")).to_contain_text("training on 12 rows")
            expect(first.locator("pre.log")).to_contain_text(
                "RuntimeError: feature store timed out while reading rows"
            )
            second = page.locator(f"section[data-attempt='{retried}-train-2']")
            expect(second.locator(".state")).to_have_text("succeeded")
            expect(page.locator("table.steps")).to_contain_text("auc=")
            page.screenshot(path=str(OUTPUT / "ui-run-en.png"), full_page=True)

            page.click("#lang-toggle")
            expect(page.locator("html")).to_have_attribute("lang", "pt-BR")
            expect(page.locator("h1")).to_contain_text("Execução")
            expect(page.locator("h2").first).to_have_text("Grafo")
            expect(first).to_contain_text("Classe de falha")
            expect(first).to_contain_text("user_error")
            expect(page.locator("svg.dag g.node[data-step='train'] text.sub")).to_contain_text(
                "concluída"
            )
            page.screenshot(path=str(OUTPUT / "ui-run-pt.png"), full_page=True)
            # The choice sticks (cookie) on the next page.
            page.click("header nav a[href='/ui/runs']")
            expect(page.locator("h1")).to_contain_text("Execuções")
            expect(page.locator(f"tr[data-run='{failed}'] .state")).to_have_text("falhou")
        finally:
            browser.close()
    assert (OUTPUT / "ui-run-pt.png").stat().st_size > 10_000
