"""The web UI in Debian's headless Chromium (Playwright): sign in, the runs list, a run whose
step failed once and was retried — its DAG, failure class and log lines — then Portuguese.
Screenshots go to test-output/."""

from __future__ import annotations

import os
import re
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.server.conftest import CLI, cli_env

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


def test_headline_times_comparison_actions_and_docs_offline(http_server):
    """Issue #18's UI in the browser: a failed run opens with its failure, times in the
    viewer's zone (UTC on hover), two runs compared, a run cancelled from its page (the form's
    CSRF token), a forged post refused, and the API docs with every request kept local."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing; `make browser` installs it", pytrace=False)
    url, token, client, home = http_server
    viewer = subprocess.run(
        [*CLI, "token", "create", "--project", "default", "--role", "viewer", "--name", "vera"],
        env=cli_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    done = [
        client.post("/api/v1/runs", json={"pipeline": "demo", "params": {"n": n}}).json()["id"]
        for n in (4, 8)
    ]
    failed = client.post("/api/v1/runs", json={"pipeline": "failing"}).json()["id"]
    for run_id in done:
        assert _finished(client, run_id)["state"] == "succeeded"
    assert _finished(client, failed)["state"] == "failed"
    slow = client.post("/api/v1/runs", json={"pipeline": "slow", "params": {"seconds": 120}})
    slow_id = slow.json()["id"]
    OUTPUT.mkdir(exist_ok=True)
    outside: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = browser.new_context(
                locale="en-US",
                timezone_id="America/Sao_Paulo",
                viewport={"width": 1280, "height": 1400},
            )

            def local_only(route):
                if route.request.url.startswith(url):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            context.route("**/*", local_only)
            page = context.new_page()
            page.goto(f"{url}/ui")
            page.fill("input[name=token]", token)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{url}/ui/runs")
            expect(page.locator(f"tr[data-run='{failed}'] .state")).to_have_text("failed")

            # Times: São Paulo's clock in the text (UTC-3, no daylight saving), UTC on hover.
            created = page.locator(f"tr[data-run='{failed}'] time")
            expect(created).to_have_class("local")
            title = created.get_attribute("title")
            assert title.endswith(" UTC")
            utc = datetime.strptime(title, "%Y-%m-%d %H:%M:%S UTC")
            shown = (utc - timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S")
            expect(created).to_have_text(re.compile(rf"^{shown} (GMT-3|UTC-03:00)$"))

            # The failed run opens with its failure.
            page.click(f"a[href='/ui/runs/{failed}']")
            headline = page.locator("#headline")
            expect(headline).to_contain_text("Step broken failed")
            expect(headline).to_contain_text("user_error")
            expect(headline).to_contain_text("ValueError: negative amount in row 2")
            expect(headline.locator("a.rawlog")).to_have_attribute(
                "href", f"/api/v1/runs/{failed}/steps/broken/logs?attempt=1"
            )
            headline.get_by_text("Attempt details").click()
            expect(page).to_have_url(re.compile(f"#attempt-{failed}-broken-1$"))
            page.screenshot(path=str(OUTPUT / "ui-headline-en.png"), full_page=True)

            # Resume the failed run from its page: its failed step runs again (it fails the
            # same way, being deterministic), as a second attempt of the same run.
            def attempts() -> int:
                run = client.get(f"/api/v1/runs/{failed}").json()
                return next(s["attempts"] for s in run["steps"] if s["node"] == "broken")

            before = attempts()
            page.click(f"form[action='/ui/runs/{failed}/resume'] button")
            expect(page).to_have_url(re.compile(f"/ui/runs/{failed}"))
            deadline = time.monotonic() + 60
            while attempts() == before and time.monotonic() < deadline:
                time.sleep(0.2)
            assert attempts() == before + 1
            assert _finished(client, failed)["state"] == "failed"

            # Two runs of a pipeline side by side.
            page.goto(f"{url}/ui/pipelines/demo")
            chart = page.locator("figure.chart[data-key='train.auc']")
            expect(chart.locator("text.tick.x")).to_have_text([done[0], done[1]])
            page.screenshot(path=str(OUTPUT / "ui-pipeline-en.png"), full_page=True)
            page.select_option("form.compare-form select[name=a]", done[0])
            page.select_option("form.compare-form select[name=b]", done[1])
            page.click("form.compare-form button[type=submit]")
            expect(page.locator("h1")).to_have_text("Compare runs")
            expect(page.locator("#compare-params tr[data-key='n'] td")).to_have_text(
                ["n", "4", "8"]
            )
            expect(page.locator("#compare-params tr[data-key='n']")).to_have_class("differs")
            expect(page.locator("#compare-metrics tr[data-key='train.auc']")).to_be_visible()
            expect(page.locator("#compare-steps tr[data-key]")).to_have_count(3)
            page.screenshot(path=str(OUTPUT / "ui-compare-en.png"), full_page=True)

            # Submit a run with a parameter from the pipeline's page.
            page.goto(f"{url}/ui/pipelines/demo")
            page.fill("form.submit-form input[name='p.n']", "6")
            page.click("form.submit-form button[type=submit]")
            expect(page).to_have_url(re.compile(rf"{url}/ui/runs/demo-"))
            expect(page.locator("h1 .state")).to_have_text("succeeded", timeout=60_000)
            submitted = page.url.rsplit("/", 1)[1]
            assert client.get(f"/api/v1/runs/{submitted}").json()["params"]["n"] == 6

            # Pause a schedule.
            schedule = {"name": "nightly", "pipeline": "demo", "cron": "0 3 * * *"}
            assert client.put("/api/v1/schedules", json=schedule).status_code == 200
            page.goto(f"{url}/ui/schedules")
            row = page.locator("tr[data-schedule='default/nightly']")
            row.get_by_role("button", name="Pause").click()
            expect(page).to_have_url(f"{url}/ui/schedules")
            expect(row.locator(".state")).to_have_text("paused")
            assert client.get("/api/v1/schedules/default/nightly").json()["paused"] is True

            # Cancel from the run's page: the form carries the CSRF token.
            page.goto(f"{url}/ui/runs/{slow_id}")
            page.click(f"form[action='/ui/runs/{slow_id}/cancel'] button")
            expect(page).to_have_url(f"{url}/ui/runs/{slow_id}")
            expect(page.locator("h1 .state")).to_have_text("cancelled", timeout=60_000)
            assert client.get(f"/api/v1/runs/{slow_id}").json()["state"] == "cancelled"

            # The same post without the token (as a forged form would send it): refused.
            page.evaluate(
                """(target) => {
                    const f = document.createElement('form');
                    f.method = 'post'; f.action = target;
                    document.body.appendChild(f); f.submit();
                }""",
                f"/ui/runs/{failed}/rerun",
            )
            expect(page.locator("p.problem")).to_contain_text("did not come from this site")
            runs = client.get("/api/v1/runs", params={"pipeline": "failing"}).json()["items"]
            assert [r["id"] for r in runs] == [failed]

            # The same pages in Portuguese.
            page.goto(f"{url}/ui/runs/{failed}?lang=pt-BR")
            expect(page.locator("#headline")).to_contain_text("A etapa broken falhou")
            expect(page.locator(f"form[action='/ui/runs/{failed}/rerun'] button")).to_have_text(
                "Executar de novo"
            )
            page.screenshot(path=str(OUTPUT / "ui-headline-pt.png"), full_page=True)
            page.goto(f"{url}/ui/compare?a={done[0]}&b={done[1]}")
            expect(page.locator("h1")).to_have_text("Comparar execuções")
            page.screenshot(path=str(OUTPUT / "ui-compare-pt.png"), full_page=True)

            # A viewer sees the headline but no buttons.
            as_viewer = browser.new_context(locale="en-US")
            as_viewer.route("**/*", local_only)
            seen = as_viewer.new_page()
            seen.goto(f"{url}/ui/login?next=/ui/runs/{failed}")
            seen.fill("input[name=token]", viewer)
            seen.click("button[type=submit]")
            expect(seen.locator("#headline")).to_contain_text("Step broken failed")
            expect(seen.locator(".actions")).to_have_count(0)
            expect(seen.locator("form[action$='/rerun']")).to_have_count(0)
            seen.screenshot(path=str(OUTPUT / "ui-headline-viewer.png"), full_page=True)

            # The API docs render with nothing fetched from outside.
            page.goto(f"{url}/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("usina")
            expect(page.locator(".opblock-tag").first).to_be_visible()
            page.screenshot(path=str(OUTPUT / "ui-docs.png"))
        finally:
            browser.close()
    assert outside == []
