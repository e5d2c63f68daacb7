"""The CI workflow runs the Makefile targets a developer and .ci/run run, and they exist."""

from __future__ import annotations

import re

import yaml

from tests.deploy.conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9_-]*):", text, re.MULTILINE))


def workflow_make_calls() -> dict[str, set[str]]:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    return {
        name: {
            target
            for step in job["steps"]
            for target in re.findall(r"\bmake\s+([a-z][a-z0-9_-]*)", step.get("run", ""))
        }
        for name, job in jobs.items()
    }


def test_workflow_calls_existing_targets() -> None:
    calls = workflow_make_calls()
    assert set(calls) == {"lint", "test", "chart", "images"}
    called = set().union(*calls.values())
    assert called == {"lint", "test", "docs", "chart", "images", "test-images"}
    assert called <= make_targets()


def ci_run_targets() -> list[str]:
    ci_run = (REPO / ".ci" / "run").read_text()
    return re.findall(r"^\s*make\s+([a-z][a-z0-9_-]*)", ci_run, re.MULTILINE)


def test_ci_run_and_workflow_agree() -> None:
    targets = ci_run_targets()
    assert targets
    assert set(targets) <= workflow_make_calls()["test"]


def test_ci_runs_the_image_tests_after_the_others() -> None:
    """The images under podman (tests/images, left out of ``make test``) run in CI too, last:
    a broken image never hides a failing unit test."""
    targets = ci_run_targets()
    assert targets[-1] == "test-images", targets
    assert {"test", "docs"} <= set(targets[:-1])
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["test"]["steps"]
    runs = [step.get("run", "") for step in steps]
    position = {
        target: next(
            i for i, run in enumerate(runs) if re.search(rf"\bmake\s+{target}(?![\w-])", run)
        )
        for target in targets
    }
    assert position["test-images"] > max(position[t] for t in targets if t != "test-images")
