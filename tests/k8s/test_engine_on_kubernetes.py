"""The engine drives a pipeline on the Kubernetes backend (emulator whose kubelet runs the real
runtime): an OOMKilled attempt comes back as a new Job with more memory, a preempted attempt
is retried without using the user's budget (which is 0), and the run succeeds."""

from __future__ import annotations

from kubernetes import client

from tests.k8s.emulator import Emulator, PodScript
from tests.k8s.pipeline_steps import fraud_k8s
from usina.backends.kubernetes import KubernetesBackend, KubernetesSettings
from usina.engine.engine import Engine, EngineSettings
from usina.engine.records import RunState
from usina.sdk.retry import FailureClass
from usina.stores.artifacts import FsspecArtifactStore
from usina.testing import InMemoryMetadataStore


def test_engine_retries_by_failure_class_on_kubernetes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    artifacts = FsspecArtifactStore(str(tmp_path / "artifacts"))
    metadata = InMemoryMetadataStore()
    with Emulator(execute=True) as emulator:
        run_id = "fraud-k8s-run"
        emulator.script(f"{run_id}-train-1", PodScript("oom"))
        emulator.script(f"{run_id}-score-1", PodScript("preempt"))
        config = client.Configuration()
        config.host = emulator.url
        api = client.ApiClient(config)
        settings = KubernetesSettings(
            namespace="ml", image="usina:test", disruption_action="FailJob", backoff_base=0.01
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
        assert final.state is RunState.SUCCEEDED, final

        train = metadata.get_attempts(run_id, "train")
        assert [a.failure_class for a in train] == [FailureClass.OOM, None]
        assert train[0].reason == "OOMKilled"
        assert train[1].resources["memory"] == "1536Mi"
        job2 = emulator.get("jobs", f"{run_id}-train-2")
        assert job2 is not None
        limits = job2["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["memory"] == "1536Mi"

        score = metadata.get_attempts(run_id, "score")
        assert [a.failure_class for a in score] == [FailureClass.PREEMPTED, None]
        assert score[0].reason == "PreemptionByScheduler"
        assert emulator.count("create jobs") == 5  # extract, train x2, score x2: none twice
        assert "scoring model 42" in backend.logs(f"{run_id}-score-2")
