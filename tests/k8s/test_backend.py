"""The Kubernetes backend against the API emulator, with the real ``kubernetes`` client:
every failure scenario, watch resilience, adoption after a restart, logs, cancel, API cost."""

from __future__ import annotations

import time

import pytest

from tests.k8s.emulator import Emulator, PodScript
from tests.k8s.support import MemoryArtifacts, make_task, settle, wait_for
from usina.engine.ports import Backend, TaskState, log_key
from usina.sdk.resources import Resources
from usina.sdk.retry import FailureClass, Retry

GPU = Resources(cpu=4, memory="16Gi", gpus=1, gpu_type="NVIDIA-H100-80GB-HBM3")

# (name, pod scripts, settings overrides, task timeout, expected class, reason, evidence)
SCENARIOS = [
    (
        "exit 1",
        [PodScript("exit", exit_code=1)],
        {},
        None,
        FailureClass.USER_ERROR,
        "Error",
        "ValueError: learning rate must be positive",
    ),
    (
        "runtime user error",
        [PodScript("exit", exit_code=42)],
        {},
        None,
        FailureClass.USER_ERROR,
        "UserError",
        "matching FailJob rule at index 1",
    ),
    (
        "runtime MemoryError",
        [PodScript("exit", exit_code=43)],
        {},
        None,
        FailureClass.OOM,
        "MemoryError",
        "exit 43",
    ),
    (
        "runtime infra",
        [PodScript("exit", exit_code=44)],
        {},
        None,
        FailureClass.INFRA,
        "RuntimeError",
        "exit 44",
    ),
    ("OOMKilled", [PodScript("oom")], {}, None, FailureClass.OOM, "OOMKilled", "OOMKilled"),
    ("137 without reason", [PodScript("kill137")], {}, None, FailureClass.OOM, "Killed", "SIGKILL"),
    (
        "preemption",
        [PodScript("preempt")],
        {"disruption_action": "FailJob"},
        None,
        FailureClass.PREEMPTED,
        "PreemptionByScheduler",
        "higher priority pod",
    ),
    (
        "API eviction",
        [PodScript("evict")],
        {"disruption_action": "FailJob"},
        None,
        FailureClass.PREEMPTED,
        "EvictionByEvictionAPI",
        "Eviction API",
    ),
    (
        "node pressure",
        [PodScript("pressure")],
        {"disruption_action": "FailJob"},
        None,
        FailureClass.PREEMPTED,
        "TerminationByKubelet",
        "low on resource: memory",
    ),
    (
        "node loss",
        [PodScript("node_lost")],
        {"disruption_action": "FailJob"},
        None,
        FailureClass.NODE_LOST,
        "DeletionByTaintManager",
        "NoExecute taint",
    ),
    (
        "image pull",
        [PodScript("image_pull")],
        {},
        None,
        FailureClass.INFRA,
        "ImagePullBackOff",
        "Back-off pulling image",
    ),
    (
        "config error",
        [PodScript("config_error")],
        {},
        None,
        FailureClass.INFRA,
        "CreateContainerConfigError",
        'secret "warehouse-creds" not found',
    ),
    (
        "admission",
        [PodScript("admission")],
        {},
        None,
        FailureClass.INFRA,
        "UnexpectedAdmissionError",
        "devices unavailable for nvidia.com/gpu",
    ),
    (
        "unschedulable",
        [PodScript("unschedulable")],
        {"queue_timeout": 0.3},
        None,
        FailureClass.UNSCHEDULABLE,
        "Unschedulable",
        "no node has enough free nvidia.com/gpu",
    ),
    (
        "timeout",
        [PodScript("hang")],
        {},
        1.0,
        FailureClass.TIMEOUT,
        "Timeout",
        "ran past its timeout of 1 s (counted from its container's start",
    ),
    (
        "timeout while unschedulable",
        [PodScript("unschedulable")],
        {"queue_timeout": 0.5},
        1.0,
        FailureClass.UNSCHEDULABLE,
        "Unschedulable",
        "Insufficient nvidia.com/gpu",
    ),
]


def _log_of(artifacts: MemoryArtifacts, attempt_id: str) -> str:
    return (artifacts.read_record(log_key(attempt_id)) or b"").decode()


def test_backend_satisfies_the_protocol(make_backend) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(make_backend(), Backend)


def test_success(make_backend, emulator: Emulator, artifacts: MemoryArtifacts) -> None:  # type: ignore[no-untyped-def]
    backend = make_backend()
    backend.launch(make_task("r1-train-1"))
    obs = settle(backend, ["r1-train-1"])["r1-train-1"]
    assert obs.state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
    assert obs.exit_code == 0  # type: ignore[attr-defined]
    assert obs.started_at is not None  # type: ignore[attr-defined]
    # a success is reported at once; its log copy, queued when the pod ended, follows
    assert wait_for(lambda: artifacts.read_record(log_key("r1-train-1")), 5)
    assert b"step finished" in (artifacts.read_record(log_key("r1-train-1")) or b"")


def test_a_success_is_not_held_for_its_log_but_a_failure_is(  # type: ignore[no-untyped-def]
    make_backend, emulator: Emulator, artifacts: MemoryArtifacts
) -> None:
    """Reading a pod's log is one more API call, which waits in line on a busy API server:
    a failed attempt's report waits for it (the log is the failure's evidence), a succeeded
    one does not (the engine moves on; the copy lands after)."""
    emulator.log_delay = 1.5
    backend = make_backend()
    emulator.script("r1-ok-1", PodScript("succeed", run=0.2))
    emulator.script("r1-bad-1", PodScript("exit", run=0.2, logs=("auc=0.91",)))
    backend.launch(make_task("r1-ok-1"))
    backend.launch(make_task("r1-bad-1"))
    ok = settle(backend, ["r1-ok-1"])["r1-ok-1"]
    assert ok.state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
    assert artifacts.read_record(log_key("r1-ok-1")) is None  # still being read
    bad = settle(backend, ["r1-bad-1"])["r1-bad-1"]
    assert bad.state is TaskState.FAILED  # type: ignore[attr-defined]
    assert "auc=0.91" in (bad.message or "")  # type: ignore[attr-defined]
    assert b"auc=0.91" in (artifacts.read_record(log_key("r1-bad-1")) or b"")
    assert wait_for(lambda: artifacts.read_record(log_key("r1-ok-1")), 5)


@pytest.mark.parametrize(
    ("name", "pods", "overrides", "timeout", "cls", "reason", "evidence"),
    SCENARIOS,
    ids=[s[0] for s in SCENARIOS],
)
def test_failure_scenario(
    make_backend,
    emulator: Emulator,
    name: str,
    pods: list[PodScript],  # type: ignore[no-untyped-def]
    overrides: dict,
    timeout: float | None,
    cls: FailureClass,
    reason: str,
    evidence: str,
) -> None:
    backend = make_backend(**overrides)
    attempt = "r1-train-1"
    emulator.script(attempt, *pods)
    backend.launch(make_task(attempt, resources=GPU, timeout=timeout))
    obs = settle(backend, [attempt])[attempt]
    assert obs.state is TaskState.FAILED, obs  # type: ignore[attr-defined]
    assert obs.failure_class is cls, obs  # type: ignore[attr-defined]
    assert obs.reason == reason, obs  # type: ignore[attr-defined]
    assert evidence in (obs.message or ""), obs.message  # type: ignore[attr-defined]
    # A failure Kubernetes would leave pending forever is stopped by the backend.
    if name in ("image pull", "config error", "unschedulable", "timeout"):
        deadline = time.monotonic() + 5
        while emulator.get("jobs", "r1-train-1") is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert emulator.get("jobs", "r1-train-1") is None
    assert emulator.count("create jobs") == 1


def test_unschedulable_is_pending_until_the_queue_timeout(make_backend, emulator: Emulator) -> None:  # type: ignore[no-untyped-def]
    backend = make_backend(queue_timeout=60.0)
    emulator.script("r1-train-1", PodScript("unschedulable"))
    backend.launch(make_task("r1-train-1", resources=GPU))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        obs = backend.observe(["r1-train-1"])["r1-train-1"]
        if obs.reason == "Unschedulable":
            break
        backend.wait(0.2)
    assert obs.state is TaskState.PENDING
    assert "Insufficient nvidia.com/gpu" in (obs.message or "")
    assert emulator.get("jobs", "r1-train-1") is not None


def test_step_queue_timeout_overrides_settings(make_backend, emulator: Emulator) -> None:  # type: ignore[no-untyped-def]
    backend = make_backend(queue_timeout=600.0)
    emulator.script("r1-train-1", PodScript("unschedulable"))
    backend.launch(make_task("r1-train-1", resources=GPU, node_extra={"queue_timeout": 0.2}))
    obs = settle(backend, ["r1-train-1"])["r1-train-1"]
    assert obs.failure_class is FailureClass.UNSCHEDULABLE  # type: ignore[attr-defined]


def test_disruption_is_absorbed_by_the_job_with_ignore(
    make_backend,
    emulator: Emulator,  # type: ignore[no-untyped-def]
    artifacts: MemoryArtifacts,
) -> None:
    """Default policy (DESIGN.md): Ignore on DisruptionTarget. The Job controller replaces the
    preempted pod without counting it; the attempt succeeds; no new Job."""
    backend = make_backend()
    emulator.script(
        "r1-train-1",
        PodScript("preempt", logs=("epoch 1", "epoch 2")),
        PodScript("succeed", logs=("resumed from checkpoint", "epoch 3")),
    )
    backend.launch(make_task("r1-train-1", resources=GPU))
    obs = settle(backend, ["r1-train-1"])["r1-train-1"]
    assert obs.state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
    assert emulator.count("create jobs") == 1
    job = emulator.get("jobs", "r1-train-1")
    assert job is not None
    assert job["status"].get("failed", 0) == 0
    # both pods' output, the replaced one's first (the success's copy may land after it)
    log = wait_for(
        lambda: (
            text
            if "resumed from checkpoint" in (text := _log_of(artifacts, "r1-train-1"))
            else None
        ),
        5,
    )
    assert log is not None
    assert "epoch 2" in log


def test_retry_decisions_and_next_job_spec(make_backend, emulator: Emulator) -> None:  # type: ignore[no-untyped-def]
    """What the engine does with each class (Retry's budget), and the next Job it submits:
    an oom attempt comes back as a new Job with memory x oom_grow; a preemption is free."""
    backend = make_backend(disruption_action="FailJob")
    retry = Retry(user=0, oom=2, oom_grow=1.5)
    res = Resources(cpu=2, memory="4Gi")
    emulator.script("r1-train-1", PodScript("oom"))
    backend.launch(make_task("r1-train-1", resources=res))
    first = settle(backend, ["r1-train-1"])["r1-train-1"]
    assert first.failure_class is FailureClass.OOM  # type: ignore[attr-defined]
    assert retry.budget(first.failure_class) == 2  # type: ignore[attr-defined]
    grown = res.with_memory(int(res.memory_bytes * retry.oom_grow))
    backend.launch(make_task("r1-train-2", resources=grown))
    emulator.script("r1-train-3", PodScript("preempt"))
    second = settle(backend, ["r1-train-2"])["r1-train-2"]
    assert second.state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
    job2 = emulator.get("jobs", "r1-train-2")
    assert job2 is not None
    limits = job2["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"] == "6Gi"
    # a preemption is a disruption: not charged to the user's budget (which is 0 here)
    backend.launch(make_task("r1-train-3", resources=grown))
    third = settle(backend, ["r1-train-3"])["r1-train-3"]
    assert third.failure_class is FailureClass.PREEMPTED  # type: ignore[attr-defined]
    assert third.failure_class.is_disruption  # type: ignore[attr-defined]
    assert retry.budget(FailureClass.USER_ERROR) == 0
    assert emulator.count("create jobs") == 3


def test_launch_is_idempotent_across_backends(make_backend, emulator: Emulator) -> None:  # type: ignore[no-untyped-def]
    first = make_backend()
    emulator.script("r1-train-1", PodScript("succeed", run=0.5))
    first.launch(make_task("r1-train-1"))
    first.launch(make_task("r1-train-1"))  # known to this backend: no request
    second = make_backend()  # another engine, before it has synced: 409 -> launched
    second.launch(make_task("r1-train-1"))
    # Jobs are created off the caller's thread: look once both backends saw the outcome.
    assert settle(second, ["r1-train-1"])["r1-train-1"].state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
    assert settle(first, ["r1-train-1"])["r1-train-1"].state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
    assert emulator.count("create jobs") <= 2
    assert len(emulator.list("jobs")) == 1


def test_create_retries_on_429_and_500(make_backend, emulator: Emulator) -> None:  # type: ignore[no-untyped-def]
    backend = make_backend()
    emulator.fail(429, 2, verb="create", retry_after=0)
    emulator.fail(500, 1, verb="create")
    backend.launch(make_task("r1-train-1"))
    assert settle(backend, ["r1-train-1"])["r1-train-1"].state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
    assert len(emulator.list("jobs")) == 1


def test_unknown_attempt(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = make_backend()
    assert backend.observe(["nope-x-1"])["nope-x-1"].state is TaskState.UNKNOWN


def test_cancel_deletes_job_and_pods(make_backend, emulator: Emulator) -> None:  # type: ignore[no-untyped-def]
    backend = make_backend()
    emulator.script("r1-train-1", PodScript("hang"))
    backend.launch(make_task("r1-train-1"))
    settle(backend, ["r1-train-1"], done=("running",))
    backend.cancel("r1-train-1")
    obs = backend.observe(["r1-train-1"])["r1-train-1"]
    assert obs.state is TaskState.FAILED
    assert obs.failure_class is FailureClass.CANCELLED
    assert emulator.get("jobs", "r1-train-1") is None
    assert emulator.list("pods") == []
    backend.cancel("r1-train-1")  # again: the Job is gone, no error


def test_wait_wakes_on_watch_events(make_backend, emulator: Emulator) -> None:  # type: ignore[no-untyped-def]
    backend = make_backend()
    emulator.script("r1-train-1", PodScript("succeed", run=0.3))
    backend.launch(make_task("r1-train-1"))
    backend.observe(["r1-train-1"])
    start = time.monotonic()
    backend.wait(10)
    assert time.monotonic() - start < 2


def test_logs_outlive_the_pod(make_backend, emulator: Emulator, artifacts: MemoryArtifacts) -> None:  # type: ignore[no-untyped-def]
    backend = make_backend()
    emulator.script("r1-train-1", PodScript("exit", logs=("loading features", "auc=0.91")))
    backend.launch(make_task("r1-train-1"))
    obs = settle(backend, ["r1-train-1"])["r1-train-1"]
    assert "auc=0.91" in (obs.message or "")  # type: ignore[attr-defined]
    for pod in emulator.list("pods"):
        emulator.delete_pod(pod["metadata"]["name"])
    assert emulator.list("pods") == []
    text = backend.logs("r1-train-1")
    assert "auc=0.91" in text
    assert "ValueError" in text
    # and after a restart of the engine, from the artifact store alone
    assert "auc=0.91" in make_backend().logs("r1-train-1")


def test_finished_job_deleted_by_ttl_is_still_observed(make_backend, emulator: Emulator) -> None:  # type: ignore[no-untyped-def]
    backend = make_backend(ttl_seconds=1)
    backend.launch(make_task("r1-train-1"))
    obs = settle(backend, ["r1-train-1"])["r1-train-1"]
    assert obs.state is TaskState.SUCCEEDED  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while emulator.get("jobs", "r1-train-1") is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emulator.get("jobs", "r1-train-1") is None
    assert backend.observe(["r1-train-1"])["r1-train-1"].state is TaskState.SUCCEEDED
    assert "step finished" in backend.logs("r1-train-1")


def test_restart_adopts_running_jobs(make_backend, emulator: Emulator) -> None:  # type: ignore[no-untyped-def]
    ids = [f"r1-step{i}-1" for i in range(5)]
    old = make_backend()
    for attempt in ids:
        emulator.script(attempt, PodScript("succeed", run=1.0))
        old.launch(make_task(attempt))
    settle(old, ids, done=("running",))
    old.close()  # the engine is killed while the 5 Jobs run

    new = make_backend()
    assert new.wait_synced(5)
    now = new.observe(ids)
    assert {o.state for o in now.values()} == {TaskState.RUNNING}
    for attempt in ids:  # the restarted engine re-submits what it thinks is running
        new.launch(make_task(attempt))
    final = settle(new, ids)
    assert {o.state for o in final.values()} == {TaskState.SUCCEEDED}  # type: ignore[attr-defined]
    assert emulator.count("create jobs") == 5
    assert len(emulator.list("jobs")) == 5


def test_watch_resilience(make_backend, emulator: Emulator) -> None:  # type: ignore[no-untyped-def]
    """Dropped watches, 410 Gone and bursts of 429/500: no transition lost, no Job twice."""
    backend = make_backend()
    ids = [f"r1-s{i}-1" for i in range(12)]
    kinds = ["succeed", "exit", "oom"]
    for i, attempt in enumerate(ids):
        emulator.script(attempt, PodScript(kinds[i % 3], run=0.2 + 0.05 * i))
        backend.launch(make_task(attempt))
    backend.wait_synced()
    time.sleep(0.1)
    emulator.drop_watches()
    time.sleep(0.1)
    emulator.gone(2)
    emulator.compact()
    emulator.drop_watches()
    time.sleep(0.1)
    emulator.fail(429, 4, verb="watch", retry_after=0)
    emulator.fail(500, 4, verb="list")
    emulator.fail(500, 4, verb="watch")
    emulator.drop_watches()
    final = settle(backend, ids, timeout=15)
    for i, attempt in enumerate(ids):
        expected = {"succeed": None, "exit": FailureClass.USER_ERROR, "oom": FailureClass.OOM}[
            kinds[i % 3]
        ]
        assert final[attempt].failure_class is expected, (attempt, final[attempt])  # type: ignore[attr-defined]
    assert emulator.count("create jobs") == len(ids)
    assert len(emulator.list("jobs")) == len(ids)
    assert emulator.count("list ") >= 4  # each 410 Gone made an informer list again
    # the cache matches the server exactly after all that
    jobs = {j["metadata"]["name"]: j["metadata"]["resourceVersion"] for j in emulator.list("jobs")}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        cached = {n: j["metadata"]["resourceVersion"] for n, j in backend._jobs.items()}
        if cached == jobs:
            break
        time.sleep(0.05)
    assert cached == jobs


def test_happy_path_api_requests_per_job(make_backend, emulator: Emulator) -> None:  # type: ignore[no-untyped-def]
    backend = make_backend()
    ids = [f"r1-s{i}-1" for i in range(20)]
    for attempt in ids:
        backend.launch(make_task(attempt))
    settle(backend, ids)
    # the successes are reported at once, their log copies (one read each) land after
    assert wait_for(lambda: emulator.count("log pods") >= 20, 5)
    total = sum(emulator.requests.values())
    assert emulator.count("create jobs") == 20
    assert emulator.count("log pods") == 20
    assert emulator.count("get ") == 0  # no per-Job polling
    assert total / len(ids) <= 3


def test_launch_returns_before_the_job_exists_and_a_failed_create_is_infra(  # type: ignore[no-untyped-def]
    make_backend, emulator: Emulator
) -> None:
    backend = make_backend()
    emulator.fail(403, 1, verb="create")  # not retried: the create fails for good
    backend.launch(make_task("r1-train-1"))
    obs = settle(backend, ["r1-train-1"])["r1-train-1"]
    assert obs.state is TaskState.FAILED, obs  # type: ignore[attr-defined]
    assert obs.failure_class is FailureClass.INFRA, obs  # type: ignore[attr-defined]
    assert obs.reason == "CreateFailed", obs  # type: ignore[attr-defined]
    assert "403" in (obs.message or ""), obs  # type: ignore[attr-defined]
    assert "r1" in backend.changed_runs()  # the failure is news for the run's driver
    assert emulator.list("jobs") == []


def test_the_change_feed_names_runs_whose_jobs_changed_and_timers_due(  # type: ignore[no-untyped-def]
    make_backend, emulator: Emulator
) -> None:
    backend = make_backend()
    emulator.script("r1-train-1", PodScript("succeed", run=0.3))
    emulator.script("r2-train-1", PodScript("succeed", run=30))
    backend.launch(make_task("r1-train-1"))
    backend.launch(make_task("r2-train-1", timeout=3.0))  # counted from whole seconds
    settle(backend, ["r1-train-1"])
    assert backend.changed_runs() >= {"r1", "r2"}
    obs = settle(backend, ["r2-train-1"], done=("running",))["r2-train-1"]
    assert obs.state is TaskState.RUNNING  # type: ignore[attr-defined]
    backend.changed_runs()
    assert backend.next_recheck() is not None  # its timeout is a time to look again
    deadline = time.monotonic() + 8
    while "r2" not in backend.changed_runs():  # named once the timeout is due, no event
        assert time.monotonic() < deadline, "the timed-out run never came back in the feed"
        time.sleep(0.1)
    obs = settle(backend, ["r2-train-1"])["r2-train-1"]
    assert obs.failure_class is FailureClass.TIMEOUT, obs  # type: ignore[attr-defined]
