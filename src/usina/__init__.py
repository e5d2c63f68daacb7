"""usina: plain-Python ML pipelines that run on a laptop or as Kubernetes Jobs.

The public surface is what ``__all__`` lists; ``tests/unit/test_public_api.py`` pins it.
"""

from typing import Any

from usina.errors import DefinitionError, ParameterError, UsinaError
from usina.sdk import (
    FailureClass,
    Pipeline,
    Resources,
    Retry,
    Step,
    StepContext,
    Torchrun,
    checkpoint,
    current,
    log_metric,
    log_metrics,
    pipeline,
    set_tag,
    step,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # ``usina.Client`` is an entry point (it opens stores, talks to servers): loaded on first
    # use, so ``import usina`` stays light and the library layers never depend on it.
    if name == "Client":
        import importlib

        return importlib.import_module("usina.client").Client
    raise AttributeError(f"module 'usina' has no attribute {name!r}")


__all__ = [
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
