"""The chart grants the server exactly what usina's Kubernetes backend calls, nothing more.

The backend runs through success, a failure, a failure it stops itself (a Job it deletes),
cancel, logs and adoption by a restarted backend, against the API emulator with the real
``kubernetes`` client; the emulator records each request's RBAC attributes (API group,
resource/subresource, verb). That set must equal the rules of the chart's Role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from kubernetes import client

from tests.deploy.conftest import NAMESPACE
from tests.k8s.emulator import Emulator, PodScript
from tests.k8s.support import MemoryArtifacts, make_task, settle
from usina import Torchrun
from usina.backends.kubernetes.backend import KubernetesBackend
from usina.backends.kubernetes.settings import KubernetesSettings
from usina.deploy.chart import parse_objects, render_chart
from usina.engine.ports import TaskState
from usina.sdk.retry import FailureClass

Access = tuple[str, str, str]  # (API group, resource[/subresource], verb)


def granted(rules: list[dict[str, Any]]) -> set[Access]:
    out: set[Access] = set()
    for rule in rules:
        assert "resourceNames" not in rule, rule
        assert "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    out.add((group, resource, verb))
    return out


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


def recorded_calls(emulator: Emulator) -> set[Access]:
    settings = replace(
        KubernetesSettings(
            namespace=NAMESPACE, image="registry.example.com/usina:1.0", queue="team"
        ),
        backoff_base=0.01,
        backoff_max=0.1,
        sync_timeout=10.0,
    )
    artifacts = MemoryArtifacts()
    config = client.Configuration()
    config.host = emulator.url
    apis: list[client.ApiClient] = []

    def backend() -> KubernetesBackend:
        apis.append(client.ApiClient(config))
        return KubernetesBackend(settings, apis[-1], artifacts)

    first = backend()
    try:
        # success, with its log copied from the pod
        first.launch(make_task("r1-ok-1"))
        # a step that fails (exit 1), and one the backend stops itself (deletes the Job)
        emulator.script("r1-bad-1", PodScript("exit", exit_code=1))
        first.launch(make_task("r1-bad-1"))
        emulator.script("r1-pull-1", PodScript("image_pull"))
        first.launch(make_task("r1-pull-1"))
        # a distributed step: a headless Service and an Indexed Job, the Service removed after
        gang = {"distributed": Torchrun(nodes=2, procs_per_node=1).to_json()}
        first.launch(make_task("r1-gang-1", node_extra=gang))
        done = settle(first, ["r1-ok-1", "r1-bad-1", "r1-pull-1", "r1-gang-1"])
        assert done["r1-gang-1"].state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
        assert done["r1-ok-1"].state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
        assert done["r1-bad-1"].failure_class is FailureClass.USER_ERROR  # type: ignore[attr-defined]
        assert done["r1-pull-1"].failure_class is FailureClass.INFRA  # type: ignore[attr-defined]
        # cancel of a running step
        emulator.script("r1-long-1", PodScript("hang"))
        first.launch(make_task("r1-long-1"))
        settle(first, ["r1-long-1"], done=("running",))
        emulator.script("r1-adopt-1", PodScript("succeed", run=1.0))
        first.launch(make_task("r1-adopt-1"))
        settle(first, ["r1-adopt-1"], done=("running",))
        first.cancel("r1-long-1")
        # Kueue evicts an admitted workload: the backend reads its Workload, and deletes it
        emulator.script("r1-evict-1", PodScript("hang"))
        first.launch(make_task("r1-evict-1"))
        settle(first, ["r1-evict-1"], done=("running",))
        emulator.kueue_evict("r1-evict-1", namespace=NAMESPACE)
        evicted = settle(first, ["r1-evict-1"])["r1-evict-1"]
        assert evicted.failure_class is FailureClass.PREEMPTED  # type: ignore[attr-defined]
        assert "step finished" in first.logs("r1-ok-1")
    finally:
        first.close()
    # a restarted backend adopts the running Job, re-submits it (409) and reads its log
    second = backend()
    try:
        assert second.wait_synced(10)
        second.launch(make_task("r1-adopt-1"))
        final = settle(second, ["r1-adopt-1"])["r1-adopt-1"]
        assert final.state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
        assert "step finished" in second.logs("r1-adopt-1")
    finally:
        second.close()
        for api in apis:
            api.close()
    with emulator.lock:
        return set(emulator.access_log)


#: Steps run as Jobs in the release namespace, under a Kueue queue.
JOBS = {"jobs": {"backend": "kubernetes", "queue": "team"}, "artifactsUrl": "s3://ml/usina"}


def test_role_grants_exactly_what_the_backend_calls(emulator: Emulator) -> None:
    calls = recorded_calls(emulator)
    objects = parse_objects(render_chart(JOBS, namespace=NAMESPACE))
    (role,) = [o for o in objects if o["kind"] == "Role"]
    (binding,) = [o for o in objects if o["kind"] == "RoleBinding"]
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert calls == granted(role["rules"]), (
        f"called but not granted: {sorted(calls - granted(role['rules']))}; "
        f"granted but never called: {sorted(granted(role['rules']) - calls)}"
    )


def test_cluster_role_has_the_same_rules() -> None:
    wide = {**JOBS, "rbac": {"clusterWide": True}}
    objects = parse_objects(render_chart(wide, namespace=NAMESPACE))
    (cluster,) = [o for o in objects if o["kind"] == "ClusterRole"]
    namespaced = parse_objects(render_chart(JOBS, namespace=NAMESPACE))
    (role,) = [o for o in namespaced if o["kind"] == "Role"]
    assert granted(cluster["rules"]) == granted(role["rules"])


def test_roles_go_to_the_jobs_namespaces_only() -> None:
    values = {
        "artifactsUrl": "s3://ml/usina",
        "jobs": {
            "projects": {
                "risk": {"backend": "kubernetes", "namespace": "risk-ml", "queue": "risk"},
                "lab": {"backend": "kubernetes", "namespace": "lab"},
                "sandbox": {"backend": "local"},
            }
        },
    }
    objects = parse_objects(render_chart(values, namespace=NAMESPACE))
    roles = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "Role"}
    assert sorted(roles) == ["lab", "risk-ml"]  # not the release namespace: nothing runs there
    kueue = ("kueue.x-k8s.io", "workloads", "list")
    assert kueue in granted(roles["risk-ml"]["rules"])
    assert kueue not in granted(roles["lab"]["rules"])  # no queue there
    assert not [
        o
        for o in parse_objects(render_chart({}, namespace=NAMESPACE))
        if o["kind"] in ("Role", "RoleBinding")
    ]  # all local: no Kubernetes access
