"""The documentation site's examples run, its generated references match the code, and the pages
that must exist in Portuguese do.

A code block preceded by ``<!-- test: file -->``, ``<!-- test: shell -->`` or
``<!-- test: yaml -->`` is executed (see docs/howto/contributing.md for the conventions). The
blocks of one page run in order in one temporary project folder with a fresh ``USINA_HOME``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MARK = re.compile(r"<!-- test: (file|shell|yaml) -->\n```(\w+)([^\n]*)\n(.*?)\n```", re.S)
EXIT = re.compile(r"#\s*exit\s+(\d+)\b")
# Pages a Portuguese-speaking newcomer needs first: the quickstart, the concepts and the
# operator's guide. The other pages fall back to English (listed by test_translations).
MUST_TRANSLATE = {"index.md", "howto/operating.md", "howto/team-platform.md"} | {
    f"concepts/{p.name}" for p in (DOCS / "concepts").glob("*.md") if ".pt." not in p.name
}


@dataclass(frozen=True)
class Block:
    kind: str
    lang: str
    title: str | None
    body: str


def blocks(page: Path) -> list[Block]:
    found = []
    for kind, lang, info, body in MARK.findall(page.read_text()):
        title = re.search(r'title="([^"]+)"', info)
        found.append(Block(kind, lang, title.group(1) if title else None, body))
    return found


def pages_with_examples() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if blocks(p))


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USINA_", "MLFLOW_"))}
    env["USINA_HOME"] = str(home / ".usina")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["COLUMNS"] = "120"
    return env


def _newest_run(folder: Path, env: dict[str, str]) -> str:
    out = subprocess.run(
        ["usina", "runs", "ls", "--output", "json"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    runs = json.loads(out)
    runs = runs["runs"] if isinstance(runs, dict) else runs
    return str(runs[0]["id"])


def run_shell(block: Block, folder: Path, env: dict[str, str]) -> None:
    for line in block.body.splitlines():
        command = re.sub(r"(^|\s+)#.*$", "", line).strip()
        if not command:
            continue
        wanted = EXIT.search(line)
        expected = int(wanted.group(1)) if wanted else 0
        if re.search(r"\bRUN\b", command):
            command = re.sub(r"\bRUN\b", shlex.quote(_newest_run(folder, env)), command)
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == expected, (
            f"`{command}` exited {done.returncode}, the docs say {expected}\n"
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        )


def check_yaml(block: Block) -> None:
    documents = [d for d in yaml.safe_load_all(block.body) if d is not None]
    assert documents, "an empty YAML example"
    import kubernetes_validate

    for doc in documents:
        if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
            kubernetes_validate.validate(doc, "1.31", strict=True)


@pytest.mark.parametrize("page", pages_with_examples(), ids=lambda p: str(p.relative_to(DOCS)))
def test_examples_run(page: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    for block in blocks(page):
        if block.kind == "file":
            assert block.title, f'{page}: a file block needs title="NAME"'
            (tmp_path / block.title).write_text(block.body + "\n")
        elif block.kind == "shell":
            run_shell(block, tmp_path, env)
        else:
            check_yaml(block)


def test_a_broken_example_fails(tmp_path: Path) -> None:
    """The harness is not a rubber stamp: an example with a renamed flag fails it."""
    page = tmp_path / "page.md"
    page.write_text("<!-- test: shell -->\n```bash\nusina runs ls --outptu json\n```\n")
    (block,) = blocks(page)
    with pytest.raises(AssertionError, match="exited 2"):
        run_shell(block, tmp_path, _env(tmp_path))


def test_generated_references_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_translations() -> None:
    english = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if ".pt." not in p.name}
    portuguese = {str(p.relative_to(DOCS)).replace(".pt.md", ".md") for p in DOCS.rglob("*.pt.md")}
    assert portuguese <= english, f"translations of no page: {sorted(portuguese - english)}"
    missing = MUST_TRANSLATE - portuguese
    assert not missing, f"pages that must exist in pt-BR: {sorted(missing)}"
    untranslated = sorted(english - portuguese)
    print("pages only in English:", *untranslated, sep="\n  ")


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS.rglob("*.md"):
        if ".pt." in page.name:
            continue
        assert str(page.relative_to(DOCS)) in nav, f"{page} is not in mkdocs.yml's nav"
