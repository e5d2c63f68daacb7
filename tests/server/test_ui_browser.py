"""The web UI in Debian's headless Chromium (Playwright): sign in, the runs list, a run whose
step failed once and was retried — its DAG, failure class and log lines — then Portuguese.
Screenshots go to test-output/."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

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


def _finished(client: httpx.Client, run_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        if run["state"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish")


def test_runs_list_run_page_and_portuguese(http_server):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing; `make browser` installs it", pytrace=False)
    url, token, client, home = http_server
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
