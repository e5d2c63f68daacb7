"""``usina k8s queues``: team quotas as code for clusters whose Kueue objects are managed outside
the Helm chart. ``render`` prints the ResourceFlavors, ClusterQueues, WorkloadPriorityClasses,
LocalQueues (and the ProvisioningRequest admission check) of a queue file; ``example`` prints a
starting file. The file has the shape of the chart's ``kueue.teamQueues`` values."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from usina.errors import DefinitionError
from usina.i18n import N_, _, error, error_text

queues_app = typer.Typer(
    help="Kueue queues and quotas per team: render them from a queue file.", no_args_is_help=True
)

EXAMPLE = """\
# usina k8s queues render queues.yaml | kubectl apply -f -
cohort: usina
gpuLabel: nvidia.com/gpu.product
capacityLabel: usina.dev/capacity
coveredResources: [cpu, memory, nvidia.com/gpu]
gpuTypes:
  - {name: h100, product: NVIDIA-H100-80GB-HBM3}
  - {name: a100, product: NVIDIA-A100-SXM4-80GB}
capacityTypes:
  - {name: on-demand, kind: on-demand}
  - {name: spot, kind: spot}
priorities:
  - {name: batch, value: 100, description: Interruptible batch work}
  - {name: normal, value: 1000, description: The default for pipeline steps}
  - {name: urgent, value: 10000, description: Production retraining}
preemption:
  withinClusterQueue: LowerPriority
  reclaimWithinCohort: Any
  borrowWithinCohort: {policy: LowerPriority, maxPriorityThreshold: 100}
provisioning:
  enabled: true
  name: gpu-provisioning
  provisioningClassName: check-capacity.autoscaling.x-k8s.io
  managedResources: [nvidia.com/gpu]
teams:
  - name: risk
    namespaces: [risk-ml]
    quotas:
      h100-on-demand: {cpu: 512, memory: 4Ti, nvidia.com/gpu: 64}
      a100-spot: {cpu: 256, memory: 2Ti, nvidia.com/gpu: 32}
    borrowingLimit: {nvidia.com/gpu: 64}
  - name: fraud
    namespaces: [fraud-ml, fraud-research]
    quotas:
      h100-on-demand: {cpu: 256, memory: 2Ti, nvidia.com/gpu: 32}
    lendingLimit: {nvidia.com/gpu: 16}
"""


@queues_app.command("render")
def render(
    config: Annotated[
        Path, typer.Argument(help="queue file (YAML; see `usina k8s queues example`)")
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="yaml or json")] = "yaml",
) -> None:
    """Print the Kueue objects of a queue file (no cluster needed)."""
    import yaml  # here, not at the top: every CLI start would pay for it

    from usina.backends.kubernetes.queues import config_from_values, render_queues

    try:
        text = config.read_text()
    except OSError as exc:
        typer.echo(
            _("cannot read the queue file {path}: {reason}").format(
                path=config, reason=exc.strerror
            ),
            err=True,
        )
        raise typer.Exit(2) from None
    try:
        values = yaml.safe_load(text) or {}
        if not isinstance(values, dict):
            raise error(
                DefinitionError,
                N_("{path}: expected a mapping at the top, not {type}"),
                path=config,
                type=type(values).__name__,
            )
        objects = render_queues(config_from_values(values))
    except (DefinitionError, yaml.YAMLError) as exc:
        typer.echo(f"{config}: {error_text(exc)}", err=True)
        raise typer.Exit(2) from None
    if output == "json":
        sys.stdout.write(json.dumps(objects, indent=2) + "\n")
    elif output == "yaml":
        sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    else:
        typer.echo(_("--output {output!r}: use yaml or json").format(output=output), err=True)
        raise typer.Exit(2)


@queues_app.command("example")
def example() -> None:
    """Print an example queue file: two teams, two GPU types, on-demand and spot."""
    sys.stdout.write(EXAMPLE)
