"""README.pt-BR.md: its quickstart runs (the same harness as the docs site's examples), in
Portuguese, and its links lead to pages that exist; README.md links to it from its top."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.docs.test_docs import ROOT, _env, _newest_run, blocks, run_shell

README_PT = ROOT / "README.pt-BR.md"


def test_the_portuguese_quickstart_runs_and_speaks_portuguese(tmp_path: Path) -> None:
    env = _env(tmp_path)
    found = blocks(README_PT)
    assert [b.kind for b in found] == ["file", "shell"]
    for block in found:
        if block.kind == "file":
            assert block.title
            (tmp_path / block.title).write_text(block.body + "\n")
        else:
            run_shell(block, tmp_path, env)
    why = subprocess.run(
        ["usina", "--lang", "pt-BR", "runs", "why", _newest_run(tmp_path, env)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert why.returncode == 1, why.stderr
    assert "corrija o código ou os dados da etapa" in why.stdout


def test_the_links_of_the_portuguese_readme_lead_somewhere() -> None:
    text = README_PT.read_text()
    links = re.findall(r"\]\(([^)#]+)", text)
    assert "docs/index.pt.md" in links
    for link in links:
        assert (ROOT / link).is_file(), link
    for page in (ROOT / "docs").rglob("*.pt.md"):
        assert str(page.relative_to(ROOT)) in links, f"README.pt-BR.md does not link {page}"
    assert "](README.pt-BR.md)" in (ROOT / "README.md").read_text().split("\n\n")[1]
