"""Steps of the engine-on-Kubernetes test (imported by name by the runtime in each "pod")."""

from __future__ import annotations

from usina import Resources, Retry, pipeline, step


@step
def extract() -> int:
    print("extracting 41 rows")
    return 41


@step(retry=Retry(oom=2, oom_grow=1.5), resources=Resources(cpu=1, memory="1Gi"))
def train(x: int) -> int:
    print(f"training on {x}")
    return x + 1


@step(retry=Retry(user=0))
def score(model: int) -> float:
    print(f"scoring model {model}")
    return model / 100


@pipeline
def fraud_k8s():
    score(train(extract()))
