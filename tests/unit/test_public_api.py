"""The public surface is deliberate: this test changes whenever it does."""

from __future__ import annotations

import usina


def test_exported_members():
    assert sorted(usina.__all__) == [
        "Client",
        "DefinitionError",
        "FailureClass",
        "ParameterError",
        "Pipeline",
        "Resources",
        "Retry",
        "Step",
        "StepContext",
        "Torchrun",
        "UsinaError",
        "__version__",
        "checkpoint",
        "current",
        "log_metric",
        "log_metrics",
        "pipeline",
        "set_tag",
        "step",
    ]
    for name in usina.__all__:
        assert hasattr(usina, name), name


def test_importing_usina_pulls_no_heavy_dependency():
    import subprocess
    import sys

    code = (
        "import sys, usina; heavy = {'sqlalchemy', 'fsspec', 'pyarrow', 'mlflow', 'kubernetes',"
        " 'torch', 'polars', 'pandas', 'fastapi', 'grpc'}; print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
