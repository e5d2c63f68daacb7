"""usina: plain-Python ML pipelines that run on a laptop or as Kubernetes Jobs.

The public surface is what ``__all__`` lists; ``tests/unit/test_public_api.py`` pins it.
"""

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

__all__ = [
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
