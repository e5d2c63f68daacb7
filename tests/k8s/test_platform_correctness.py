"""Kubernetes correctness on the emulator (issue #15 part 4): a Kueue eviction after admission
is ``preempted``; a step's timeout counts from its container's start, not its time pending;
the backend's own decisions survive a restart; a gang's Service is owned by its Job; the
rendezvous timeout reaches torchrun. Everything the backend sends validates against the
Kubernetes 1.31 schemas."""

from __future__ import annotations

import time
from typing import Any

import kubernetes_validate

from tests.k8s.emulator import Emulator, PodScript
from tests.k8s.support import MemoryArtifacts, make_task, settle
from usina import Torchrun
from usina.backends.kubernetes.distributed import render_gang
from usina.backends.kubernetes.settings import KubernetesSettings
from usina.engine.ports import TaskState
from usina.sdk.retry import FailureClass

HANG = PodScript("hang")


def _until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def _validate_all(emulator: Emulator) -> None:
    assert emulator.created
    for obj in emulator.created:
        kubernetes_validate.validate(obj, "1.31.0", strict=True)


def test_kueue_eviction_after_admission_is_preempted(  # type: ignore[no-untyped-def]
    make_backend, emulator: Emulator
) -> None:
    backend = make_backend(queue="team-risk")
    attempt = "r1-train-1"
    emulator.script(attempt, HANG)
    backend.launch(make_task(attempt))
    settle(backend, [attempt], done=("running",))
    emulator.kueue_evict(attempt)  # Kueue re-suspends the admitted Job, the pod is stopped
    obs = settle(backend, [attempt])[attempt]
    assert obs.state is TaskState.FAILED, obs  # type: ignore[attr-defined]
    assert obs.failure_class is FailureClass.PREEMPTED, obs  # type: ignore[attr-defined]
    assert obs.reason == "Evicted", obs  # type: ignore[attr-defined]
    assert "Preempted" in (obs.message or "")  # type: ignore[attr-defined]
    # The suspended Job would wait in the queue forever: the backend deletes it, and the
    # engine's next attempt is a new Job (retried as a disruption, not the user's budget).
    assert _until(lambda: emulator.get("jobs", attempt) is None)
    assert ("kueue.x-k8s.io", "workloads", "list") in emulator.access_log
    _validate_all(emulator)


def test_a_queued_then_started_step_is_timed_from_its_start(  # type: ignore[no-untyped-def]
    make_backend, emulator: Emulator
) -> None:
    backend = make_backend(queue_timeout=30.0)
    attempt = "r1-train-1"
    # Pending (no node) for 3 s, then runs 0.5 s: longer in all than its 2.5 s timeout. The
    # container's startedAt has whole seconds, as on a real API server, so the timeout is
    # measured up to 1 s early: 0.5 s of running plus that second stays under 2.5 s.
    emulator.script(attempt, PodScript("succeed", run=0.5, pending=3.0))
    backend.launch(make_task(attempt, timeout=2.5))
    obs = settle(backend, [attempt], timeout=15)[attempt]
    assert obs.state is TaskState.SUCCEEDED, obs  # type: ignore[attr-defined]
    job = emulator.created[0]
    assert job["metadata"]["annotations"]["usina.dev/timeout"] == "2.5"
    assert job["spec"]["activeDeadlineSeconds"] >= 30  # a backstop, not the step's timeout
    _validate_all(emulator)


def test_a_started_step_past_its_timeout_fails_as_timeout(  # type: ignore[no-untyped-def]
    make_backend, emulator: Emulator
) -> None:
    backend = make_backend(queue_timeout=30.0)
    attempt = "r1-train-1"
    emulator.script(attempt, PodScript("hang", pending=1.0))
    backend.launch(make_task(attempt, timeout=1.0))
    obs = settle(backend, [attempt], timeout=15)[attempt]
    assert obs.failure_class is FailureClass.TIMEOUT, obs  # type: ignore[attr-defined]
    assert obs.started_at is not None  # type: ignore[attr-defined]
    assert obs.finished_at is not None  # type: ignore[attr-defined]
    assert obs.finished_at - obs.started_at < 3  # type: ignore[attr-defined]
    assert _until(lambda: emulator.get("jobs", attempt) is None)


def test_a_restarted_backend_keeps_cancelled_and_unschedulable(  # type: ignore[no-untyped-def]
    make_backend, emulator: Emulator, artifacts: MemoryArtifacts
) -> None:
    old = make_backend(queue_timeout=0.3)
    emulator.script("r1-train-1", HANG)
    emulator.script("r1-score-1", PodScript("unschedulable"))
    old.launch(make_task("r1-train-1"))
    old.launch(make_task("r1-score-1", step="score"))
    settle(old, ["r1-train-1"], done=("running",))
    old.cancel("r1-train-1")
    first = settle(old, ["r1-train-1", "r1-score-1"])
    assert first["r1-score-1"].failure_class is FailureClass.UNSCHEDULABLE  # type: ignore[attr-defined]
    assert _until(lambda: emulator.list("jobs") == [])
    old.close()

    new = make_backend(queue_timeout=0.3)  # a restart: nothing in memory, the Jobs are gone
    again = new.observe(["r1-train-1", "r1-score-1"])
    assert again["r1-train-1"].failure_class is FailureClass.CANCELLED, again
    assert again["r1-score-1"].failure_class is FailureClass.UNSCHEDULABLE, again
    assert again["r1-score-1"].message == first["r1-score-1"].message  # type: ignore[attr-defined]
    assert new.observe(["r1-other-1"])["r1-other-1"].state is TaskState.UNKNOWN


GANG = {"distributed": Torchrun(nodes=2, procs_per_node=1, rdzv_timeout=45).to_json()}


def test_the_gang_service_is_owned_by_its_job(  # type: ignore[no-untyped-def]
    make_backend, emulator: Emulator
) -> None:
    backend = make_backend()
    attempt = "r1-fit-1"
    emulator.script(attempt, HANG)
    backend.launch(make_task(attempt, step="fit", node_extra=GANG))
    settle(backend, [attempt], done=("running",))
    service = emulator.get("services", attempt)
    job = emulator.get("jobs", attempt)
    assert service is not None
    assert job is not None
    assert service["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": attempt,
            "uid": job["metadata"]["uid"],
            "blockOwnerDeletion": False,
            "controller": False,
        }
    ]
    assert ("", "services", "patch") in emulator.access_log
    _validate_all(emulator)
    kubernetes_validate.validate(service, "1.31.0", strict=True)
    # Deleted with its Job by the garbage collector, with no backend running.
    backend.close()
    with emulator.lock:
        emulator._delete(("jobs", "ml", attempt), "Background")
    assert emulator.get("services", attempt) is None


def test_rdzv_timeout_reaches_torchrun() -> None:
    task = make_task("r1-fit-1", step="fit", node_extra=GANG)
    _, job = render_gang(task, KubernetesSettings(namespace="ml", image="usina:1"))
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--rdzv-conf=timeout=45" in command


def test_the_engine_retries_a_kueue_eviction_without_the_users_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import threading

    from kubernetes import client

    from tests.k8s.pipeline_steps import fraud_k8s
    from usina.backends.kubernetes import KubernetesBackend
    from usina.engine.engine import Engine, EngineSettings
    from usina.engine.records import RunState
    from usina.stores.artifacts import FsspecArtifactStore
    from usina.testing import InMemoryMetadataStore

    artifacts = FsspecArtifactStore(str(tmp_path / "artifacts"))
    metadata = InMemoryMetadataStore()
    run_id = "fraud-evict"
    first = f"{run_id}-score-1"  # score has Retry(user=0): only a disruption may retry it
    with Emulator(execute=True) as emulator:
        emulator.script(first, HANG)

        def evict_once_running() -> None:
            def running() -> bool:
                return any(
                    p["metadata"]["labels"].get("batch.kubernetes.io/job-name") == first
                    and p["status"].get("phase") == "Running"
                    for p in emulator.list("pods")
                )

            if _until(running, timeout=60):
                emulator.kueue_evict(first)

        evictor = threading.Thread(target=evict_once_running, daemon=True)
        evictor.start()
        config = client.Configuration()
        config.host = emulator.url
        api = client.ApiClient(config)
        settings = KubernetesSettings(
            namespace="ml", image="usina:test", queue="team", backoff_base=0.01
        )
        backend = KubernetesBackend(settings, api, artifacts)
        try:
            engine = Engine(
                backend=backend,
                metadata=metadata,
                artifacts=artifacts,
                settings=EngineSettings(poll_interval=0.2, environment="k8s-test"),
            )
            run = engine.submit(fraud_k8s.compile(), run_id=run_id)
            final = engine.drive(run.id)
        finally:
            backend.close()
            api.close()
        evictor.join(timeout=5)
    assert final.state is RunState.SUCCEEDED, final
    score = metadata.get_attempts(run_id, "score")
    assert [a.failure_class for a in score] == [FailureClass.PREEMPTED, None]
    assert score[0].reason == "Evicted"
