"""One MLflow adapter, one flavour table: pinned so a second copy cannot creep back in."""

from __future__ import annotations

import ast
from pathlib import Path

import usina
from usina.tracking import flavours

SRC = Path(usina.__file__).resolve().parent


def _imports_mlflow(path: Path) -> bool:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
            a.name == "mlflow" or a.name.startswith("mlflow.") for a in node.names
        ):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module is not None
            and (node.module == "mlflow" or node.module.startswith("mlflow."))
        ):
            return True
    return False


def test_only_the_adapter_imports_mlflow() -> None:
    importers = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if _imports_mlflow(p))
    assert importers == ["tracking/adapter.py"]


def test_the_flavour_table_names_every_supported_flavour_once() -> None:
    names = [f.name for f in flavours.FLAVOURS]
    assert names == ["lightgbm", "xgboost", "sklearn", "onnx", "pytorch", "python_function"]
    assert flavours.flavour("pyfunc") is flavours.PYFUNC
    assert flavours.serving_flavour({"python_function": {}, "sklearn": {}}) is flavours.flavour(
        "sklearn"
    )
    assert flavours.serving_flavour({"keras": {}}) is None


def test_an_unknown_flavour_lists_the_known_ones() -> None:
    import pytest

    with pytest.raises(ValueError, match="xgboost"):
        flavours.flavour("keras")
