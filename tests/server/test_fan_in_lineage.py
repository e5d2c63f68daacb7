"""The lineage route follows fan-in inputs: an artifact read as one element of a list (or a
dict) of upstream outputs names its consumer, the input and its position (or key)."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

from fastapi.testclient import TestClient

from usina.server.app import create_app
from usina.server.context import ServerContext
from usina.server.settings import ReconcilerSettings, ServerSettings
from usina.stores.platform import Role

FAN_IN = """
from usina import pipeline, step

@step
def part(i: int) -> int:
    return i * 10

@step
def total(parts: list) -> int:
    return sum(parts)

@step
def pick(by: dict) -> int:
    return by["high"] - by["low"]

@pipeline
def fan():
    parts = [part(i, name=f"part{i}") for i in range(3)]
    total(parts)
    pick({"low": parts[0], "high": parts[2]})
"""


def test_lineage_names_the_consumers_of_fan_in_inputs(tmp_path: Path) -> None:
    (tmp_path / "fan.py").write_text(textwrap.dedent(FAN_IN))
    settings = ServerSettings(
        database_url=f"sqlite:///{tmp_path}/usina.db",
        artifacts_url=str(tmp_path / "artifacts"),
        attempts_dir=str(tmp_path / "attempts"),
        pipelines=(str(tmp_path / "fan.py"),),
        reconciler=ReconcilerSettings(lease_ttl=5.0, poll_interval=0.1, max_runs=8),
    )
    ctx = ServerContext.open(settings)
    token, _ = ctx.platform.create_token("ana", {"default": Role.EDITOR})
    h = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(ctx)) as client:
        run_id = client.post("/api/v1/runs", json={"pipeline": "fan"}, headers=h).json()["id"]
        deadline = time.monotonic() + 120
        while (run := client.get(f"/api/v1/runs/{run_id}", headers=h).json())["state"] not in (
            "succeeded",
            "failed",
            "cancelled",
        ):
            assert time.monotonic() < deadline, run
            time.sleep(0.2)
        assert run["state"] == "succeeded", run
        lineage = client.get(f"/api/v1/runs/{run_id}/lineage", headers=h).json()

    consumers = {
        item["producer"]["node"]: sorted(
            (c["node"], c["input"], c["key"]) for c in item["consumers"]
        )
        for item in lineage
    }
    assert consumers == {
        "part0": [("pick", "by", "low"), ("total", "parts", 0)],
        "part1": [("total", "parts", 1)],
        "part2": [("pick", "by", "high"), ("total", "parts", 2)],
        "total": [],
        "pick": [],
    }
