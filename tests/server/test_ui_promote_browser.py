"""Promotion from the web UI, in Debian's headless Chromium (Playwright): an editor makes
version 2 the champion from the Models page (the form's CSRF token, the API's promote and its
audit entry); a viewer sees no such button. The registry is MLflow's, on SQLite."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.server.conftest import CLI, cli_env, free_port, wait_healthy, write_pipelines
from tests.server.test_ui_browser import ARGS, CHROMIUM, OUTPUT
from usina.stores.platform import PlatformStore

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _token(home: Path, role: str, name: str) -> str:
    return subprocess.run(
        [*CLI, "token", "create", "--project", "default", "--role", role, "--name", name],
        env=cli_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


def test_an_editor_promotes_from_the_models_page_and_a_viewer_cannot(tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing; `make browser` installs it", pytrace=False)
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.create_registered_model("fraud", tags={"usina.project": "default"})
    for _ in range(2):
        mlflow.create_model_version("fraud", source=str(tmp_path), tags={"usina.step": "train"})
    mlflow.set_registered_model_alias("fraud", "champion", "1")

    pipelines = write_pipelines(tmp_path)
    editor, viewer = _token(tmp_path, "editor", "ana"), _token(tmp_path, "viewer", "vera")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [*CLI, "server", "--port", str(port), "--pipelines", str(pipelines),
             "--registry-uri", uri],
            env=cli_env(tmp_path), cwd=tmp_path, stdout=log, stderr=log,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {editor}"}, timeout=30)
    try:
        wait_healthy(client, proc, 90)
        OUTPUT.mkdir(exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                for who, token in (("viewer", viewer), ("editor", editor)):
                    context = browser.new_context(locale="en-US")
                    page = context.new_page()
                    page.goto(f"{url}/ui")
                    page.fill("input[name=token]", token)
                    page.click("button[type=submit]")
                    expect(page).to_have_url(f"{url}/ui/runs")
                    page.goto(f"{url}/ui/models")
                    second = page.locator("tr[data-version='2']")
                    expect(second).to_be_visible()
                    button = second.locator("form[action$='/aliases/champion'] button")
                    if who == "viewer":
                        expect(button).to_have_count(0)
                        context.close()
                        continue
                    expect(button).to_have_count(1)
                    button.click()
                    expect(page).to_have_url(f"{url}/ui/models")
                    expect(page.locator("tr[data-version='2']")).to_contain_text("champion")
                    page.screenshot(path=str(OUTPUT / "ui-models-promoted.png"), full_page=True)
                    context.close()
            finally:
                browser.close()
        assert str(mlflow.get_model_version_by_alias("fraud", "champion").version) == "2"
    finally:
        client.close()
        proc.terminate()
        proc.wait(20)
    platform = PlatformStore(f"sqlite:///{tmp_path}/.usina/usina.db")
    try:
        promoted = [e for e in platform.list_audit(limit=100) if e.action == "model.promote"]
    finally:
        platform.close()
    assert [(e.actor.split(" ")[0], e.target, e.outcome) for e in promoted] == [
        ("ana", "fraud", "ok")
    ]
