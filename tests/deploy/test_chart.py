"""The Helm chart, through Helm's own Go SDK (``helm-python-sdk``): linted in strict mode and
rendered for the default values and for every option on; every object valid (built-in kinds
against Kubernetes 1.31 and the newest schemas, Kueue and Prometheus-operator kinds against
their CRDs); ``values.schema.json`` refuses wrong values with a message naming the key."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.deploy.conftest import CHART, NAMESPACE, all_values
from tests.deploy.validation import OLDEST, describe, is_custom, validate
from usina.deploy.chart import chart_path, parse_objects, render_chart
from usina.errors import DeployError

Obj = dict[str, Any]


def kinds(objects: list[Obj]) -> Counter[str]:
    return Counter(o["kind"] for o in objects)


def pod_specs(objects: list[Obj]) -> list[tuple[str, Obj]]:
    return [
        (describe(o), o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    ]


def test_chart_is_found_in_the_checkout() -> None:
    assert chart_path() == CHART
    assert helm.helm_sdk_version().startswith("v4.")


@pytest.mark.parametrize("kube_version", [None, f"v{OLDEST}"])
@pytest.mark.parametrize("values", ["default", "all"])
def test_lint_strict(values: str, kube_version: str | None) -> None:
    report = helm.lint(
        CHART,
        {} if values == "default" else all_values(),
        strict=True,
        namespace=NAMESPACE,
        kube_version=kube_version,
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Info only (severity 1: "icon is recommended"); strict mode fails on warnings and errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_default_render(default_objects: list[Obj]) -> None:
    assert kinds(default_objects) == {
        "Deployment": 1,
        "Service": 1,
        "PodDisruptionBudget": 1,
        "ServiceAccount": 1,
        "ConfigMap": 2,  # the Grafana dashboard, the backend config (steps run locally)
    }
    assert {o["metadata"]["namespace"] for o in default_objects} == {NAMESPACE}


def test_all_options_render(all_objects: list[Obj]) -> None:
    assert kinds(all_objects) == {
        "Deployment": 3,  # the server and two endpoints
        "Service": 3,
        "HorizontalPodAutoscaler": 1,  # the challenger has autoscaling off
        "PodDisruptionBudget": 3,
        "Ingress": 1,
        "NetworkPolicy": 3,
        "ServiceAccount": 1,
        "Role": 2,  # one per managed namespace
        "RoleBinding": 2,
        "Secret": 1,  # the MLflow URI given as a value; the database uses existingSecret
        "ConfigMap": 2,
        "ResourceFlavor": 3,
        "ClusterQueue": 1,
        "LocalQueue": 2,
        "ServiceMonitor": 3,
        "PrometheusRule": 1,
    }
    roles = sorted(o["metadata"]["namespace"] for o in all_objects if o["kind"] == "Role")
    assert roles == ["ml", "team-risk"]


@pytest.mark.parametrize("which", ["default_objects", "all_objects", "fraud_objects"])
def test_every_object_validates(which: str, request: pytest.FixtureRequest) -> None:
    objects: list[Obj] = request.getfixturevalue(which)
    assert objects
    for obj in objects:
        validate(obj)
    if which == "all_objects":
        custom = sorted(o["kind"] for o in objects if is_custom(o))
        assert set(custom) == {
            "ClusterQueue",
            "LocalQueue",
            "ResourceFlavor",
            "PrometheusRule",
            "ServiceMonitor",
        }


def test_validation_catches_a_typo(all_objects: list[Obj]) -> None:
    """The checks above can fail: an unknown field fails both kinds of validation."""
    import jsonschema
    import kubernetes_validate

    deployment = json.loads(json.dumps(next(o for o in all_objects if o["kind"] == "Deployment")))
    deployment["spec"]["template"]["spec"]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    queue = json.loads(json.dumps(next(o for o in all_objects if o["kind"] == "ClusterQueue")))
    queue["spec"]["cohort"] = "research"  # v1beta1's name of cohortName
    with pytest.raises(jsonschema.ValidationError):
        validate(queue)


@pytest.mark.parametrize("which", ["default_objects", "all_objects", "fraud_objects"])
def test_pods_are_locked_down(which: str, request: pytest.FixtureRequest) -> None:
    objects: list[Obj] = request.getfixturevalue(which)
    for name, spec in pod_specs(objects):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] >= 10000, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["privileged"] is False, name
            assert ctx["capabilities"] == {"drop": ["ALL"]}, name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"]["memory"], name
            assert container["livenessProbe"], name
            assert container["readinessProbe"], name
        # Only the server talks to the Kubernetes API.
        if not name.endswith("-server"):
            assert spec["automountServiceAccountToken"] is False, name


def test_nothing_cluster_wide_unless_asked(
    default_objects: list[Obj], all_objects: list[Obj]
) -> None:
    for objects in (default_objects, all_objects):
        assert not {"ClusterRole", "ClusterRoleBinding"} & set(kinds(objects))
    wide = parse_objects(render_chart({"rbac": {"clusterWide": True}}, namespace=NAMESPACE))
    assert kinds(wide)["ClusterRole"] == kinds(wide)["ClusterRoleBinding"] == 1
    assert "Role" not in kinds(wide)
    for obj in wide:
        validate(obj)


def test_secrets_come_from_existing_secrets(all_objects: list[Obj]) -> None:
    server = next(o for o in all_objects if describe(o) == "Deployment/usina-server")
    env = {e["name"]: e for e in server["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["USINA_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "usina-postgres",
        "key": "url",
    }
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"]["name"] == "usina-mlflow"
    assert "value" not in env["USINA_DATABASE_URL"]
    # No plain-text credential anywhere in a pod spec.
    assert "postgresql://" not in json.dumps(server)


def test_server_replicas_need_a_shared_database(
    default_objects: list[Obj], all_objects: list[Obj]
) -> None:
    def replicas(objects: list[Obj]) -> int:
        server = next(o for o in objects if describe(o) == "Deployment/usina-server")
        return int(server["spec"]["replicas"])

    assert replicas(default_objects) == 1  # SQLite on an emptyDir: one pod
    assert replicas(all_objects) == 3  # PostgreSQL from database.existingSecret


def test_endpoint_names_are_unique() -> None:
    twice = {"serving": {"endpoints": [{"name": "fraud", "model": "models:/fraud@champion"}] * 2}}
    with pytest.raises(DeployError, match='the name "fraud" is used twice'):
        render_chart(twice)


def test_kueue_quotas_cover_every_resource_of_every_flavor(all_objects: list[Obj]) -> None:
    queue = next(o for o in all_objects if o["kind"] == "ClusterQueue")
    group = queue["spec"]["resourceGroups"][0]
    assert group["coveredResources"] == ["cpu", "memory", "nvidia.com/gpu"]
    flavors = {f["name"]: f["resources"] for f in group["flavors"]}
    assert set(flavors) == {"cpu", "h100", "a100"}
    for resources in flavors.values():
        assert [r["name"] for r in resources] == group["coveredResources"]
    assert {r["name"]: r["nominalQuota"] for r in flavors["cpu"]}["nvidia.com/gpu"] == "0"
    assert flavors["h100"][2] == {
        "name": "nvidia.com/gpu",
        "nominalQuota": "16",
        "borrowingLimit": "8",
    }
    local = {o["metadata"]["name"]: o for o in all_objects if o["kind"] == "LocalQueue"}
    assert local["ml"]["metadata"]["namespace"] == NAMESPACE
    assert {q["spec"]["clusterQueue"] for q in local.values()} == {"team-risk"}


def test_monitoring_files_are_embedded(all_objects: list[Obj]) -> None:
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    rule = next(o for o in all_objects if o["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"] == rules["groups"]
    dashboard = next(
        o for o in all_objects if o["kind"] == "ConfigMap" and "usina.json" in o["data"]
    )
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    parsed = json.loads(dashboard["data"]["usina.json"])
    assert parsed == json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    assert parsed["title"]
    assert parsed["panels"]


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"server": {"replicas": "two"}}, "/server/replicas"),
        ({"serving": {"endpoints": [{"name": "fraud", "model": 7}]}}, "/serving/endpoints/0/model"),
        ({"rbac": {"clusterWide": "yes"}}, "/rbac/clusterWide"),
        (
            {"kueue": {"clusterQueue": {"name": "q", "queueingStrategy": "LIFO"}}},
            "queueingStrategy",
        ),
        ({"server": {"replica": 2}}, "replica"),  # a typo: unknown keys are refused too
        # several replicas on a database, or steps as Jobs, need a shared object store
        (
            {"database": {"url": "postgresql://db/usina"}, "server": {"replicas": 2}},
            "/artifactsUrl",
        ),
        ({"jobs": {"backend": "kubernetes"}}, "/artifactsUrl"),
        (
            {"jobs": {"backend": "kubernetes"}, "artifactsUrl": "/var/lib/usina/artifacts"},
            "/artifactsUrl",
        ),
        ({"jobs": {"projects": {"risk": {"namespace": "Risk_ML"}}}}, "namespace"),
    ],
)
def test_schema_refuses_wrong_values(values: Obj, where: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as info:
        chart.validate_schema(chart.merge_values(values))
    assert where in str(info.value)
    # and the same through usina's own rendering, as a DeployError naming the key
    with pytest.raises(DeployError, match="did not render") as info2:
        render_chart(values)
    assert where in str(info2.value)


def test_schema_message_is_clear() -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as info:
        chart.validate_schema(chart.merge_values({"server": {"replicas": "two"}}))
    assert "got string, want integer" in str(info.value)


def test_a_project_on_kubernetes_without_an_object_store_is_refused() -> None:
    values = {"jobs": {"projects": {"risk": {"backend": "kubernetes"}}}}
    with pytest.raises(DeployError, match=r"set artifactsUrl=s3://BUCKET/PREFIX"):
        render_chart(values)


def test_the_backend_config_names_each_projects_jobs() -> None:
    values = {
        "artifactsUrl": "s3://ml/usina",
        "objectStore": {"existingSecret": "s3-creds"},
        "jobs": {
            "backend": "kubernetes",
            "image": "ghcr.io/usina-ml/usina-runtime:1.0",
            "serviceAccount": "pipelines",
            "projects": {"risk": {"namespace": "risk-ml", "queue": "risk"}},
        },
    }
    objects = parse_objects(render_chart(values, namespace=NAMESPACE))
    config = next(o for o in objects if o["metadata"]["name"].endswith("-backends"))
    parsed = json.loads(config["data"]["backends.json"])
    shared = {
        "image": "ghcr.io/usina-ml/usina-runtime:1.0",
        "service_account": "pipelines",
        "env_from_secrets": ["s3-creds"],
    }
    assert parsed == {
        "backend": "kubernetes",
        "options": {"namespace": NAMESPACE, **shared},
        "projects": {
            "risk": {
                "backend": "kubernetes",
                "options": {"namespace": "risk-ml", "queue": "risk", **shared},
            }
        },
    }
    # The server reads exactly that file.
    from usina.compose.projects import BackendConfig

    risk = BackendConfig.parse(parsed).of("risk")
    assert risk.options["queue"] == "risk"
    server = next(o for o in objects if o["kind"] == "Deployment")
    main = server["spec"]["template"]["spec"]["containers"][0]
    assert "--backend-config=/etc/usina/backends.json" in main["args"]
    assert main["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]


def test_jobs_default_to_the_charts_runtime_image() -> None:
    """Without ``jobs.image`` the steps' Jobs use ``images.runtime`` at the chart's version (an
    image ``make images`` builds), a digest when one is given, and a project's own image wins."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    base = {"artifactsUrl": "s3://ml/usina", "jobs": {"backend": "kubernetes"}}

    def options(values: Obj) -> dict[str, Any]:
        objects = parse_objects(render_chart(values, namespace=NAMESPACE))
        config = next(o for o in objects if o["metadata"]["name"].endswith("-backends"))
        return json.loads(config["data"]["backends.json"])

    found = options(base)
    assert found["options"]["image"] == f"ghcr.io/usina-ml/usina-runtime:{chart['appVersion']}"
    digest = "sha256:" + "ab" * 32
    pinned = options({**base, "images": {"runtime": {"digest": digest}}})
    assert pinned["options"]["image"] == f"ghcr.io/usina-ml/usina-runtime@{digest}"
    own = options(
        {**base, "jobs": {"backend": "kubernetes", "projects": {"risk": {"image": "r/img:2"}}}}
    )
    assert own["projects"]["risk"]["options"]["image"] == "r/img:2"
    assert own["options"]["image"].startswith("ghcr.io/usina-ml/usina-runtime:")
