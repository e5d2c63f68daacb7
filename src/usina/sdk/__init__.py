"""The definition layer: steps, pipelines, resources and retry policies. Pure: no I/O."""

from usina.sdk import checkpoint
from usina.sdk.context import StepContext, current, log_metric, log_metrics, set_tag
from usina.sdk.distributed import Torchrun
from usina.sdk.pipeline import Param, Pipeline, Plan, PlanNode, pipeline
from usina.sdk.resources import Resources
from usina.sdk.retry import FailureClass, Retry
from usina.sdk.step import Step, StepOutput, step

__all__ = [
    "FailureClass",
    "Param",
    "Pipeline",
    "Plan",
    "PlanNode",
    "Resources",
    "Retry",
    "Step",
    "StepContext",
    "StepOutput",
    "Torchrun",
    "checkpoint",
    "current",
    "log_metric",
    "log_metrics",
    "pipeline",
    "set_tag",
    "step",
]
