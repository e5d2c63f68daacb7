"""``usina bundle ls``: what a pipeline's bundle holds, its id, and the size-limit exit."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from usina.bundles import pack
from usina.cli.bundle_cmds import bundle_app

app = typer.Typer()
app.add_typer(bundle_app, name="bundle")  # as usina.cli.main registers it


def make_project(root: Path) -> Path:
    (root / "pipelines").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    (root / "helpers.py").write_text("K = 1\n")
    (root / "data.csv").write_text("a,b\n" * 1000)
    (root / ".usinaignore").write_text("*.csv\n")
    pipeline = root / "pipelines" / "train.py"
    pipeline.write_text("import helpers\n")
    return pipeline


def test_ls_lists_files_digest_and_skipped(tmp_path: Path) -> None:
    pipeline = make_project(tmp_path / "proj")
    result = CliRunner().invoke(app, ["bundle", "ls", str(pipeline), "--skipped"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[:4]] == [
        ".usinaignore",
        "helpers.py",
        "pipelines/train.py",
        "pyproject.toml",
    ]
    assert ["data.csv", "skipped:", "ignored"] in [line.split() for line in lines]
    digest = pack(tmp_path / "proj").digest
    assert lines[-1].endswith(f"bundle {digest}")
    assert lines[-1].startswith("4 files, ")

    result = CliRunner().invoke(app, ["bundle", "ls", f"{pipeline}:train", "-o", "json"])
    data = json.loads(result.output)
    assert data["digest"] == digest
    assert [f["path"] for f in data["files"]][-1] == "pyproject.toml"


def test_ls_over_the_limit_exits_2_naming_the_largest(tmp_path: Path) -> None:
    pipeline = make_project(tmp_path / "proj")
    (tmp_path / "proj" / "weights.bin").write_bytes(b"w" * 300_000)
    result = CliRunner().invoke(app, ["bundle", "ls", str(pipeline), "--max-mib", "0.1"])
    assert result.exit_code == 2
    assert "over the 102.4 KiB limit; largest files: weights.bin (293.0 KiB)" in result.output
    assert "bundle (over the limit)" in result.output


def test_ls_of_a_root_that_does_not_hold_the_file(tmp_path: Path) -> None:
    pipeline = make_project(tmp_path / "proj")
    (tmp_path / "other").mkdir()
    result = CliRunner().invoke(
        app, ["bundle", "ls", str(pipeline), "--root", str(tmp_path / "other")]
    )
    assert result.exit_code == 2
    assert "not inside the bundle root" in result.output
