"""The attempt charts in Debian's headless Chromium (Playwright): the CPU, memory and GPU curves
and the request and limit lines are drawn where the numbers say. Screenshot in test-output/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.profile.factory import GI, World
from usina.server import profiles
from usina.server.ui import templates

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"

pytestmark = pytest.mark.slow


def test_the_charts_draw_curves_and_the_limit_line_in_a_browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing; `make browser` installs it", pytrace=False)
    world = World()
    run = world.run(
        "train",
        [
            {
                "step": "fit",
                "memory": "4Gi",
                "gpus": 1,
                "series": [GI, 2 * GI, 3 * GI, 3.5 * GI, 2 * GI],
                "gpu_util": [[5.0, 90, 95, 97, 3]],
            }
        ],
    )
    [attempt] = world.metadata.get_attempts(run.id)
    charts = profiles.attempt_charts(world.artifacts, [attempt])[attempt.id]
    fragment = templates.get_template("profile_charts.html").render(charts=charts)
    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 400})
            page.set_content(f"<!doctype html><html><body>{fragment}</body></html>")
            figures = page.locator("figure.profile-chart")
            assert figures.count() == 3
            memory = page.locator("figure[data-kind='memory']")
            curve = memory.locator("polyline.series").bounding_box()
            limit = memory.locator("line.mark.limit").bounding_box()
            assert curve is not None
            assert limit is not None
            assert curve["width"] > 300  # the curve spans the chart's time axis
            assert curve["height"] > 40  # 1Gi -> 3.5Gi: it climbs
            assert limit["y"] < curve["y"]  # the 4Gi limit is drawn above the 3.5Gi peak
            assert "request = limit 4.0Gi" in memory.inner_text()
            gpu = page.locator("figure[data-kind='gpu'] polyline.series").bounding_box()
            assert gpu is not None
            assert gpu["height"] > 60  # 3 % .. 97 % of a 100 % axis
            page.screenshot(path=str(OUTPUT / "profile-charts.png"), full_page=True)
        finally:
            browser.close()
    assert (OUTPUT / "profile-charts.png").stat().st_size > 5_000
