"""checkov scans the Dockerfile and the chart's rendered manifests (default values, every option
on, and ``usina deploy`` of the fraud champion): no failed check but those listed, each with its
reason, in deploy/checkov-skips.yaml, and no entry there that no scan needs."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import REPO

SKIPS = REPO / "deploy" / "checkov-skips.yaml"
# A virtual environment of its own (make tools): checkov's pins conflict with torch and mlflow.
CHECKOV = Path(os.environ.get("USINA_CHECKOV") or REPO / ".venv/tools/checkov/bin/checkov")


def write(objects: list[dict[str, Any]], folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, obj in enumerate(objects):
        name = f"{i:02d}-{obj['kind']}-{obj['metadata']['name']}.yaml".lower()
        (folder / name).write_text(yaml.safe_dump(obj, sort_keys=False))


@pytest.fixture(scope="module")
def report(
    tmp_path_factory: pytest.TempPathFactory,
    default_objects: list[dict[str, Any]],
    all_objects: list[dict[str, Any]],
    fraud_objects: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run `make tools`"
    root = tmp_path_factory.mktemp("checkov")
    write(default_objects, root / "default")
    write(all_objects, root / "all")
    write(fraud_objects, root / "deploy")
    shutil.copy(REPO / "Dockerfile", root / "Dockerfile")
    proc = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(root),
            "--framework",
            "kubernetes",
            "dockerfile",
            "--output",
            "json",
            "--quiet",
            "--compact",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": ""},
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: some check failed
    parsed = json.loads(proc.stdout)
    reports: list[dict[str, Any]] = parsed if isinstance(parsed, list) else [parsed]
    return reports


def skips() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = yaml.safe_load(SKIPS.read_text())["skips"]
    return entries


def test_skip_file_gives_a_reason_for_each_entry() -> None:
    for entry in skips():
        assert entry["check"].startswith("CKV"), entry
        assert entry["resources"], entry
        assert len(entry["reason"].split()) >= 10, f"{entry['check']}: say why"


def test_both_frameworks_scanned(report: list[dict[str, Any]]) -> None:
    scanned = {r["check_type"]: r["summary"] for r in report}
    assert set(scanned) == {"kubernetes", "dockerfile"}
    for summary in scanned.values():
        assert summary["passed"] > 20
        assert summary["parsing_errors"] == 0


def test_no_failed_check_but_the_listed_ones(report: list[dict[str, Any]]) -> None:
    failed = [
        (c["check_id"], c["resource"], c["check_name"])
        for r in report
        for c in r["results"]["failed_checks"]
    ]
    used: set[int] = set()
    unexpected = []
    for check, resource, title in failed:
        hits = [
            i
            for i, entry in enumerate(skips())
            if entry["check"] == check
            and any(fnmatch.fnmatchcase(resource, p) for p in entry["resources"])
        ]
        used.update(hits)
        if not hits:
            unexpected.append(f"{check} ({title}) on {resource}")
    assert not unexpected, "checkov failed checks not in deploy/checkov-skips.yaml:\n" + "\n".join(
        unexpected
    )
    stale = [e["check"] for i, e in enumerate(skips()) if i not in used]
    assert not stale, f"deploy/checkov-skips.yaml lists checks that no longer fail: {stale}"
