"""Fixtures of the deployment tests: the chart rendered by Helm's Go SDK, three ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from usina.deploy.chart import Endpoint, parse_objects, render_chart, render_endpoint

HERE = Path(__file__).parent
REPO = HERE.parents[1]
CHART = REPO / "deploy" / "helm" / "usina"
ALL_VALUES = HERE / "values-all.yaml"
NAMESPACE = "ml"
FRAUD = Endpoint(name="fraud", model="models:/fraud@champion")


def all_values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ALL_VALUES.read_text())
    return loaded


@pytest.fixture(scope="session")
def default_objects() -> list[dict[str, Any]]:
    return parse_objects(render_chart({}, namespace=NAMESPACE))


@pytest.fixture(scope="session")
def all_objects() -> list[dict[str, Any]]:
    return parse_objects(render_chart(all_values(), namespace=NAMESPACE))


@pytest.fixture(scope="session")
def fraud_objects() -> list[dict[str, Any]]:
    return render_endpoint(FRAUD, namespace=NAMESPACE)
