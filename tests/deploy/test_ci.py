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
    assert called == {"lint", "test", "docs", "chart", "images"}
    assert called <= make_targets()


def test_ci_run_and_workflow_agree() -> None:
    ci_run = (REPO / ".ci" / "run").read_text()
    targets = set(re.findall(r"^\s*make\s+([a-z][a-z0-9_-]*)", ci_run, re.MULTILINE))
    assert targets
    assert targets <= workflow_make_calls()["test"]
