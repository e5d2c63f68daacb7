"""`make demo`'s install on a fresh clone: a lean .venv with what the demo needs and no PyTorch.

The clone is of the committed HEAD, as CI's is; uv's cache makes the install take seconds to a
couple of minutes. The size is printed (the README quotes it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _size_mb(folder: Path) -> int:
    return (
        sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) >> 20
    )


def test_demo_install_is_lean(tmp_path: Path) -> None:
    clone = tmp_path / "usina"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    done = subprocess.run(
        ["make", "--no-print-directory", "demo-install"],
        cwd=clone, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    python = clone / ".venv" / "bin" / "python"
    for module in ("usina.cli.main", "usina.serving.cli", "lightgbm", "mlflow", "polars", "grpc"):
        subprocess.run([str(python), "-c", f"import {module}"], check=True, timeout=120)
    torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, timeout=120)
    assert torch.returncode != 0, "the demo's .venv must not carry PyTorch"
    assert (clone / ".venv" / "bin" / "usina").exists()
    size = _size_mb(clone / ".venv")
    print(f"make demo's .venv: {size} MiB")
    assert size < 2000, f"the demo's .venv grew to {size} MiB"
