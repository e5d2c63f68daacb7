"""Distributed steps on the Kubernetes backend (emulator): a gang is a headless Service plus an
Indexed Job; one rank failing fails the Job, and the engine starts exactly one new gang (a new
Job for all ranks, ``-2``), never a replacement pod in the first Job. The pods run the rendered
``torchrun`` command (through the emulator's fake torchrun) and the real runtime per rank."""

from __future__ import annotations

import json
import time
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client
from kubernetes_validate import utils as kv_utils

from tests.k8s.emulator import Emulator, PodScript
from tests.k8s.gang_steps import gang_k8s
from tests.k8s.support import MemoryArtifacts, make_task, settle
from usina import Torchrun
from usina.backends.kubernetes import KubernetesBackend, KubernetesSettings
from usina.engine.engine import Engine, EngineSettings
from usina.engine.ports import TaskState, error_key, log_key
from usina.engine.records import RunState
from usina.sdk.retry import FailureClass
from usina.stores.artifacts import FsspecArtifactStore
from usina.testing import InMemoryMetadataStore

INDEX = "batch.kubernetes.io/job-completion-index"
HANG = PodScript("hang")


def _wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def _run_gang(tmp_path: Any, run_id: str, env: dict[str, str], scripts: dict[int, PodScript]):  # type: ignore[no-untyped-def]
    artifacts = FsspecArtifactStore(str(tmp_path / "artifacts"))
    metadata = InMemoryMetadataStore()
    emulator = Emulator(execute=True).start()
    for index, script in scripts.items():
        emulator.script_index(f"{run_id}-fit-1", index, script)
    config = client.Configuration()
    config.host = emulator.url
    api = client.ApiClient(config)
    settings = KubernetesSettings(namespace="ml", image="usina:test", env=env, backoff_base=0.01)
    backend = KubernetesBackend(settings, api, artifacts)
    try:
        engine = Engine(
            backend=backend,
            metadata=metadata,
            artifacts=artifacts,
            settings=EngineSettings(poll_interval=0.2, environment="k8s-gang-test"),
        )
        run = engine.submit(gang_k8s.compile(), run_id=run_id)
        final = engine.drive(run.id)
        services_gone = _wait_until(lambda: emulator.list("services") == [])
    finally:
        backend.close()
        api.close()
        emulator.stop()
    return final, metadata, artifacts, emulator, backend, services_gone


@pytest.mark.parametrize(
    ("run_id", "env", "scripts", "cls", "reason", "evidence"),
    [
        (
            "gang-user",
            {"GANG_FAIL_RANK": "3"},
            {},
            FailureClass.USER_ERROR,
            "Error",
            "rank 3 of 4 (node 1, pod gang-user-fit-1-1-",
        ),
        (
            "gang-oom",
            {},
            {0: HANG, 1: PodScript("oom", run=0.3)},
            FailureClass.OOM,
            "OOMKilled",
            "exceeding its memory limit",
        ),
        (
            "gang-preempt",
            {},
            {0: HANG, 1: PodScript("preempt", run=0.3)},
            FailureClass.PREEMPTED,
            "PreemptionByScheduler",
            "higher priority pod",
        ),
    ],
    ids=["a rank raises", "a pod is OOMKilled", "a pod is preempted"],
)
def test_one_rank_failing_restarts_the_whole_gang_once(  # type: ignore[no-untyped-def]
    tmp_path,
    run_id: str,
    env: dict[str, str],
    scripts: dict[int, PodScript],
    cls: FailureClass,
    reason: str,
    evidence: str,
) -> None:
    final, metadata, artifacts, emulator, backend, services_gone = _run_gang(
        tmp_path, run_id, env, scripts
    )
    assert final.state is RunState.SUCCEEDED, final
    attempts = metadata.get_attempts(run_id, "fit")
    first, second = f"{run_id}-fit-1", f"{run_id}-fit-2"
    assert [a.id for a in attempts] == [first, second]
    assert [a.failure_class for a in attempts] == [cls, None]
    assert attempts[0].reason == reason
    assert evidence in (attempts[0].message or ""), attempts[0].message

    # Exactly one new gang: one Job per attempt, each with one pod per index, never a
    # replacement pod within the first Job.
    assert emulator.count("create jobs") == 2
    assert [o["metadata"]["name"] for o in emulator.created if o["kind"] == "Job"] == [
        first,
        second,
    ]
    assert dict(emulator.pods_created) == {first: 2, second: 2}
    # Each gang's headless Service was created before its Job and deleted after it.
    assert [o["kind"] for o in emulator.created] == ["Service", "Job", "Service", "Job"]
    assert services_gone, emulator.list("services")
    job2 = emulator.get("jobs", second)
    assert job2 is not None
    assert job2["spec"]["completions"] == job2["spec"]["parallelism"] == 2
    assert job2["status"]["completedIndexes"] == "0-1"
    if cls is FailureClass.OOM:  # the whole new gang gets more memory
        limits = job2["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["memory"] == "1536Mi"

    # Logs of all ranks, node 0 (rank 0) first.
    log = backend.logs(second)
    assert log.index(f"==> pod {second}-0-") < log.index(f"==> pod {second}-1-")
    for rank in range(4):
        assert f"rank {rank} of 4 on node {rank // 2}, attempt 2" in log


def test_a_failing_rank_s_error_record_becomes_the_attempt_s(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run_id = "gang-err"
    env = {"GANG_FAIL_RANK": "2", "GANG_BARRIER": str(tmp_path / "barrier")}
    final, metadata, artifacts, _, backend, _ = _run_gang(tmp_path, run_id, env, {})
    assert final.state is RunState.SUCCEEDED
    first = metadata.get_attempts(run_id, "fit")[0]
    raw = artifacts.read_record(error_key(first.id))
    assert raw is not None
    record = json.loads(raw)
    assert record["rank"] == 2
    assert record["kind"] == "user_error"
    assert record["message"].startswith(f"rank 2 of 4 (node 1, pod {first.id}-1-")
    assert "ValueError: rank 2: loss is NaN" in record["traceback"]
    assert "ValueError: rank 2: loss is NaN" in (first.message or "")
    # The log of the failed gang keeps both pods' output: the healthy node's and the failing one's.
    log = backend.logs(first.id)
    assert "rank 0 of 4 on node 0, attempt 1" in log
    assert "ValueError: rank 2: loss is NaN" in log


GANG_NODE = {"distributed": Torchrun(nodes=3, procs_per_node=2).to_json()}


def test_gang_where_every_rank_succeeds_completes(  # type: ignore[no-untyped-def]
    make_backend, emulator: Emulator, artifacts: MemoryArtifacts
) -> None:
    backend = make_backend()
    attempt = "r1-train-1"
    emulator.script_index(attempt, 2, PodScript("succeed", run=0.3))
    backend.launch(make_task(attempt, node_extra=GANG_NODE))
    obs = settle(backend, [attempt])[attempt]
    assert obs.state is TaskState.SUCCEEDED, obs  # type: ignore[attr-defined]
    assert dict(emulator.pods_created) == {attempt: 3}
    pods = sorted(emulator.list("pods"), key=lambda p: p["metadata"]["annotations"][INDEX])
    assert [p["spec"]["hostname"] for p in pods] == [f"{attempt}-{i}" for i in range(3)]
    assert [p["metadata"]["labels"][INDEX] for p in pods] == ["0", "1", "2"]
    assert _wait_until(lambda: emulator.list("services") == [])
    # a success is reported at once; the ranks' log copies land after it
    assert _wait_until(
        lambda: (artifacts.read_record(log_key(attempt)) or b"").count(b"==> pod") == 3
    )
    log = (artifacts.read_record(log_key(attempt)) or b"").decode()
    headers = [line for line in log.splitlines() if line.startswith("==> pod")]
    assert [h.split("(")[1] for h in headers] == [
        "node 0: ranks 0-1) <==",
        "node 1: ranks 2-3) <==",
        "node 2: ranks 4-5) <==",
    ]


@pytest.mark.parametrize("version", ["1.31.0", kv_utils.latest_version()])
def test_what_the_backend_creates_validates(  # type: ignore[no-untyped-def]
    make_backend, emulator: Emulator, version: str
) -> None:
    backend = make_backend(queue="team-risk")
    backend.launch(make_task("r1-train-1", node_extra=GANG_NODE))
    settle(backend, ["r1-train-1"])
    assert [o["kind"] for o in emulator.created] == ["Service", "Job"]
    for obj in emulator.created:
        kubernetes_validate.validate(obj, version, strict=True)
    job = emulator.created[1]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-risk"


def test_restart_adopts_a_running_gang_and_cancel_removes_it(  # type: ignore[no-untyped-def]
    make_backend, emulator: Emulator
) -> None:
    attempt = "r1-train-1"
    emulator.script(attempt, HANG)
    old = make_backend()
    old.launch(make_task(attempt, node_extra=GANG_NODE))
    settle(old, [attempt], done=("running",))
    old.close()  # the engine is killed while the gang runs

    new = make_backend()
    assert new.wait_synced(5)
    assert new.observe([attempt])[attempt].state is TaskState.RUNNING
    new.launch(make_task(attempt, node_extra=GANG_NODE))  # re-submitted: adopted
    assert emulator.count("create jobs") == 1
    assert emulator.count("create services") == 1
    new.cancel(attempt)
    obs = new.observe([attempt])[attempt]
    assert obs.failure_class is FailureClass.CANCELLED
    assert emulator.get("jobs", attempt) is None
    assert _wait_until(lambda: emulator.list("services") == [] and emulator.list("pods") == [])
    assert dict(emulator.pods_created) == {attempt: 3}


def test_a_service_whose_job_went_while_no_backend_ran_is_deleted(  # type: ignore[no-untyped-def]
    make_backend, emulator: Emulator, monkeypatch
) -> None:
    import usina.backends.kubernetes.backend as backend_module

    monkeypatch.setattr(backend_module, "SERVICE_GRACE_SECONDS", 0.0)
    attempt = "r1-train-1"
    emulator.script(attempt, HANG)
    old = make_backend()
    old.launch(make_task(attempt, node_extra=GANG_NODE))
    settle(old, [attempt], done=("running",))
    old.close()
    with emulator.lock:  # e.g. its TTL ran out while the engine was down
        # A Service without its owner (created by an older usina, or its patch failed): the
        # garbage collector leaves it, the backend's sweep deletes it.
        emulator.objects[("services", "ml", attempt)]["metadata"].pop("ownerReferences")
        emulator._delete(("jobs", "ml", attempt))
    assert len(emulator.list("services")) == 1

    new = make_backend()
    assert new.wait_synced(5)
    assert _wait_until(lambda: emulator.list("services") == [])


def test_partial_admission_starts_a_smaller_gang_that_resumes_from_the_checkpoint(  # type: ignore[no-untyped-def]
    tmp_path,
) -> None:
    """An elastic gang (2 to 4 nodes) runs at full size, checkpoints at step 10 and is evicted by
    Kueue; the next attempt's Job asks for 4 pods again, Kueue admits it with 2 (partial
    admission, quota short), the pods' torchrun forms a world of 2, and the ranks resume from the
    checkpoint to the end. The eviction is a disruption: ``Retry(user=0)`` does not stop it."""
    import threading

    from tests.k8s.elastic_steps import STEPS, elastic_k8s

    run_id = "elastic"
    first, second = f"{run_id}-fit-1", f"{run_id}-fit-2"
    artifacts = FsspecArtifactStore(str(tmp_path / "artifacts"))
    metadata = InMemoryMetadataStore()
    with Emulator(execute=True) as emulator:
        emulator.partial_admission[second] = 2

        def evict_after_the_checkpoint() -> None:
            def waiting() -> bool:
                return any(
                    "rank 0: checkpoint 10 written" in line  # rank 0 writes checkpoints
                    for lines in list(emulator.logs.values())
                    for line in lines
                )

            if _wait_until(waiting, timeout=90):
                emulator.kueue_evict(first)

        config = client.Configuration()
        config.host = emulator.url
        api = client.ApiClient(config)
        settings = KubernetesSettings(
            namespace="ml", image="usina:test", queue="team-risk", backoff_base=0.01
        )
        backend = KubernetesBackend(settings, api, artifacts)
        evictor = threading.Thread(target=evict_after_the_checkpoint, daemon=True)
        evictor.start()
        try:
            engine = Engine(
                backend=backend,
                metadata=metadata,
                artifacts=artifacts,
                settings=EngineSettings(poll_interval=0.2, environment="k8s-elastic-test"),
            )
            run = engine.submit(elastic_k8s.compile(), run_id=run_id)
            final = engine.drive(run.id)
        finally:
            backend.close()
            api.close()
        evictor.join(5)
        created = [o for o in emulator.created if o["kind"] == "Job"]
        admitted = dict(emulator.admitted_with)
        pods = dict(emulator.pods_created)
    assert final.state is RunState.SUCCEEDED, final.error
    attempts = metadata.get_attempts(run_id)
    assert [(a.number, a.failure_class) for a in attempts] == [
        (1, FailureClass.PREEMPTED),
        (2, None),
    ]
    # Both Jobs asked for 4 pods and allowed 2; Kueue gave the first 4 and the second 2.
    for job in created:
        kubernetes_validate.validate(job, "1.31.0", strict=True)
        assert (job["spec"]["parallelism"], job["spec"]["completions"]) == (4, 4)
        annotations = job["metadata"]["annotations"]
        assert annotations["kueue.x-k8s.io/job-min-parallelism"] == "2"
    names = [j["metadata"]["name"] for j in created]
    assert [admitted[n] for n in names] == [4, 2]
    assert [pods[n] for n in names] == [4, 2]
    [fit] = metadata.get_steps(run_id)
    output = json.loads(artifacts.get_bytes(fit.outputs[0].digest))
    # The smaller gang saw its own size and carried the count on from the checkpoint.
    assert output["world"] == 2
    assert output["start"] == 10
    assert output["count"] == STEPS
