"""Team quotas as code: the Kueue objects ``render_queues`` and the Helm chart produce validate
against the Kueue CRD schemas (and the CRDs' CEL rules, checked by hand), the chart and the
Python renderer agree, wrong configurations are refused with a message naming the fix, and a
step's priority, queue and MIG / time-sliced GPUs reach the Job."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.deploy.validation import crd_schemas, validate
from tests.k8s.support import make_task
from usina.backends.kubernetes.manifests import build_job
from usina.backends.kubernetes.queues import (
    CapacityKind,
    CapacityType,
    GpuType,
    Provisioning,
    QueueConfig,
    Team,
    config_from_values,
    render_queues,
)
from usina.backends.kubernetes.settings import KubernetesSettings
from usina.cli.queues import EXAMPLE, queues_app
from usina.deploy.chart import parse_objects, render_chart
from usina.errors import DefinitionError
from usina.sdk.resources import Resources

Obj = dict[str, Any]


def example() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(EXAMPLE)
    return loaded


def by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {
        f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}".lstrip("/"): o
        for o in objects
        if o["kind"] == kind
    }


def check_cel(queue: Obj) -> None:
    """The ClusterQueue CRD's CEL rules (jsonschema does not run them)."""
    spec = queue["spec"]
    for group in spec["resourceGroups"]:
        for flavor in group["flavors"]:
            assert len(flavor["resources"]) == len(group["coveredResources"])
            assert [r["name"] for r in flavor["resources"]] == group["coveredResources"]
    pre = spec["preemption"]
    assert not (
        pre["reclaimWithinCohort"] == "Never" and pre["borrowWithinCohort"]["policy"] != "Never"
    )
    if not spec.get("cohortName"):
        assert all(
            "borrowingLimit" not in r
            for g in spec["resourceGroups"]
            for f in g["flavors"]
            for r in f["resources"]
        )


def test_rendered_objects_validate_against_the_kueue_crds() -> None:
    objects = render_queues(config_from_values(example()))
    assert {("kueue.x-k8s.io/v1beta2", k) for k in ("ClusterQueue", "ResourceFlavor")} <= set(
        crd_schemas()
    )
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in crd_schemas():
            validate(obj)
            checked += 1
        if obj["kind"] == "ClusterQueue":
            check_cel(obj)
    # flavors 4, priorities 3, cluster queues 2, local queues 3; the provisioning check's two
    # kinds have no CRD schema here and are checked by shape below.
    assert checked == 12


def test_flavors_per_gpu_and_capacity_with_spot_tainted() -> None:
    objects = render_queues(config_from_values(example()))
    flavors = by_kind(objects, "ResourceFlavor")
    assert sorted(flavors) == ["a100-on-demand", "a100-spot", "h100-on-demand", "h100-spot"]
    spot = flavors["h100-spot"]["spec"]
    assert spot["nodeLabels"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "usina.dev/capacity": "spot",
    }
    taint = {"key": "usina.dev/capacity", "value": "spot", "effect": "NoSchedule"}
    assert spot["nodeTaints"] == [taint]
    assert spot["tolerations"] == [{**taint, "operator": "Equal"}]
    assert "nodeTaints" not in flavors["h100-on-demand"]["spec"]


def test_team_queues_quotas_cohort_preemption_and_provisioning() -> None:
    objects = render_queues(config_from_values(example()))
    queues = by_kind(objects, "ClusterQueue")
    risk = queues["risk"]["spec"]
    assert risk["cohortName"] == "usina"
    assert risk["namespaceSelector"]["matchExpressions"][0]["values"] == ["risk-ml"]
    assert risk["preemption"] == {
        "withinClusterQueue": "LowerPriority",
        "reclaimWithinCohort": "Any",
        "borrowWithinCohort": {"policy": "LowerPriority", "maxPriorityThreshold": 100},
    }
    flavors = {f["name"]: f["resources"] for f in risk["resourceGroups"][0]["flavors"]}
    # every flavor listed, so the team can borrow where it has no quota
    assert sorted(flavors) == ["a100-on-demand", "a100-spot", "h100-on-demand", "h100-spot"]
    assert flavors["h100-on-demand"][2] == {
        "name": "nvidia.com/gpu",
        "nominalQuota": "64",
        "borrowingLimit": "64",
    }
    assert flavors["h100-spot"][2]["nominalQuota"] == "0"
    fraud = {
        f["name"]: f["resources"] for f in queues["fraud"]["spec"]["resourceGroups"][0]["flavors"]
    }
    assert fraud["h100-on-demand"][2]["lendingLimit"] == "16"
    assert "lendingLimit" not in fraud["a100-spot"][2]  # nothing to lend there
    assert risk["admissionChecksStrategy"]["admissionChecks"] == [
        {
            "name": "gpu-provisioning",
            "onFlavors": ["h100-on-demand", "h100-spot", "a100-on-demand", "a100-spot"],
        }
    ]
    check = by_kind(objects, "AdmissionCheck")["gpu-provisioning"]["spec"]
    assert check["controllerName"] == "kueue.x-k8s.io/provisioning-request"
    assert check["parameters"]["kind"] == "ProvisioningRequestConfig"
    config = by_kind(objects, "ProvisioningRequestConfig")["gpu-provisioning"]["spec"]
    assert config["managedResources"] == ["nvidia.com/gpu"]
    assert config["retryStrategy"]["backoffLimitCount"] == 3
    local = by_kind(objects, "LocalQueue")
    assert sorted(local) == ["fraud-ml/fraud", "fraud-research/fraud", "risk-ml/risk"]
    assert local["fraud-research/fraud"]["spec"] == {"clusterQueue": "fraud"}
    priorities = by_kind(objects, "WorkloadPriorityClass")
    assert {n: p["value"] for n, p in priorities.items()} == {
        "batch": 100,
        "normal": 1000,
        "urgent": 10000,
    }


def test_reserved_capacity_is_not_provisioned() -> None:
    config = QueueConfig(
        teams=(Team("a", ("a-ml",), {"h100-reserved": {"nvidia.com/gpu": 8}}),),
        gpu_types=(GpuType("h100", "H100"),),
        capacity_types=(
            CapacityType("reserved", CapacityKind.RESERVED),
            CapacityType("spot", CapacityKind.SPOT),
        ),
        provisioning=Provisioning(),
    )
    queue = by_kind(render_queues(config), "ClusterQueue")["a"]
    assert queue["spec"]["admissionChecksStrategy"]["admissionChecks"][0]["onFlavors"] == [
        "h100-spot"
    ]


def test_the_chart_renders_the_same_objects_as_the_cli() -> None:
    values = {**example(), "enabled": True}
    rendered = parse_objects(render_chart({"kueue": {"teamQueues": values}}, namespace="ml"))
    from_chart = [o for o in rendered if o["apiVersion"].startswith("kueue.x-k8s.io/")]
    for obj in from_chart:
        assert obj["metadata"].pop("labels")["app.kubernetes.io/component"] == "kueue"
        if (obj["apiVersion"], obj["kind"]) in crd_schemas():
            validate(obj)

    def key(o: Obj) -> tuple[str, str, str]:
        return o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", "")

    from_python = render_queues(config_from_values(values))
    assert sorted(from_chart, key=key) == sorted(from_python, key=key)


def test_the_chart_renders_no_team_queues_by_default() -> None:
    rendered = parse_objects(render_chart({}, namespace="ml"))
    assert not [o for o in rendered if o["apiVersion"].startswith("kueue.x-k8s.io/")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda v: v["teams"][0]["quotas"].update({"h200-spot": {"cpu": 1}}),
            "unknown flavor 'h200-spot'; flavors are: h100-on-demand",
        ),
        (
            lambda v: v["teams"][1].update({"lendingLimit": {"nvidia.com/gpu": 99}}),
            "lend at most the quota",
        ),
        (
            lambda v: v["preemption"].update({"reclaimWithinCohort": "Never"}),
            "borrow_within_cohort must be Never",
        ),
        (
            lambda v: v["teams"][1].update({"namespaces": ["risk-ml"]}),
            "namespace 'risk-ml' belongs to teams 'risk' and 'fraud'",
        ),
        (
            lambda v: v["teams"][0]["quotas"]["h100-on-demand"].update({"memory": "4TB"}),
            "did you mean 4Ti",
        ),
        (lambda v: v.update({"flavours": []}), "unknown keys ['flavours']"),
    ],
)
def test_wrong_configurations_are_refused_with_the_fix(change: Any, message: str) -> None:
    values = example()
    change(values)
    with pytest.raises(DefinitionError) as info:
        render_queues(config_from_values(values))
    assert message in str(info.value)


def test_cli_renders_a_queue_file(tmp_path: Any) -> None:
    path = tmp_path / "queues.yaml"
    runner = CliRunner()
    made = runner.invoke(queues_app, ["example"])
    assert made.exit_code == 0
    path.write_text(made.stdout)
    result = runner.invoke(queues_app, ["render", str(path)])
    assert result.exit_code == 0, result.output
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    assert objects == render_queues(config_from_values(example()))
    path.write_text(
        "teams: [{name: Risk, namespaces: [x]}]\ngpuTypes: [{name: h100, product: H}]\n"
    )
    bad = runner.invoke(queues_app, ["render", str(path)])
    assert bad.exit_code == 2
    assert "team name 'Risk' must be a DNS label" in bad.output


def test_a_step_priority_and_the_project_queue_label_the_job() -> None:
    settings = KubernetesSettings(
        namespace="risk-ml", image="usina:1", queue="risk", workload_priority_class="normal"
    )
    job = build_job(make_task("r1-train-1", node_extra={"priority": "urgent"}), settings)
    labels = job["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "risk"
    assert labels["kueue.x-k8s.io/priority-class"] == "urgent"
    plain = build_job(make_task("r1-train-1"), settings)
    assert plain["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "normal"
    no_queue = build_job(make_task("r1-train-1"), KubernetesSettings(image="usina:1"))
    assert "kueue.x-k8s.io/priority-class" not in no_queue["metadata"]["labels"]


@pytest.mark.parametrize(
    ("resources", "device"),
    [
        (Resources(gpus=2, mig="1g.10gb"), "nvidia.com/mig-1g.10gb"),
        (Resources(gpus=1, shared_gpu=True), "nvidia.com/gpu.shared"),
        (Resources(gpus=1), "nvidia.com/gpu"),
    ],
)
def test_mig_and_time_sliced_gpus_render_and_validate(resources: Resources, device: str) -> None:
    assert resources.problems() == []
    job = build_job(make_task(resources=resources), KubernetesSettings(image="usina:1"))
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert {k: v for k, v in limits.items() if k.startswith("nvidia.com/")} == {
        device: str(resources.gpus)
    }
    validate(dict(job))


def test_wrong_gpu_sharing_is_explained() -> None:
    assert "not a MIG profile" in " ".join(Resources(gpus=1, mig="10gb").problems())
    assert "gpus counts the slices" in " ".join(Resources(mig="1g.10gb").problems())
    assert "not both" in " ".join(Resources(gpus=1, mig="1g.10gb", shared_gpu=True).problems())


def test_the_chart_with_team_queues_lints_strict() -> None:
    import helm_python as helm

    from tests.deploy.conftest import CHART

    values = {"kueue": {"teamQueues": {**example(), "enabled": True}}}
    report = helm.lint(CHART, values, strict=True, namespace="ml")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    bad = {"kueue": {"teamQueues": {"teams": [{"name": "risk", "namespace": "x"}]}}}
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as info:
        chart.validate_schema(chart.merge_values(bad))
    assert "namespace" in str(info.value)
