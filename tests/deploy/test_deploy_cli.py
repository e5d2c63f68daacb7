"""``usina deploy``: the fraud champion's endpoint rendered from the chart's serving template
validates like the chart, and ``--apply`` server-side-applies each object."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from tests.deploy.conftest import FRAUD, NAMESPACE
from tests.deploy.validation import validate
from usina.cli.main import main
from usina.deploy.chart import render_endpoint

Obj = dict[str, Any]


#: The model registry every endpoint below is pointed at (a Secret of the usina release).
REGISTRY = ("--registry-secret", "usina-mlflow/tracking-uri")
REGISTRY_VALUES = {"mlflow": {"existingSecret": "usina-mlflow", "secretKey": "tracking-uri"}}


def deploy(
    capsys: pytest.CaptureFixture[str], *args: str, registry: bool = True
) -> tuple[int, list[Obj], str]:
    given = REGISTRY if registry else ()
    code = main(["deploy", "models:/fraud@champion", "--name", "fraud", *given, *args])
    out, err = capsys.readouterr()
    objects = [d for d in yaml.safe_load_all(out) if d] if code == 0 and out.strip() else []
    return code, objects, err


def test_fraud_champion_validates_like_the_chart(capsys: pytest.CaptureFixture[str]) -> None:
    code, objects, err = deploy(capsys, "--namespace", NAMESPACE, "--replicas", "3")
    assert code == 0, err
    assert [o["kind"] for o in objects] == [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    for obj in objects:
        validate(obj)
        assert obj["metadata"]["name"] == "usina-fraud"
        assert obj["metadata"]["namespace"] == NAMESPACE
    deployment, service, hpa, _ = objects
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["serve", "models:/fraud@champion"]
    assert container["image"] == "ghcr.io/usina-ml/usina-serving:0.1.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8080, "grpc": 8081}
    assert hpa["spec"]["minReplicas"] == 3
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    # the same objects as the chart's template renders for that endpoint
    expected = render_endpoint(
        FRAUD.__class__("fraud", FRAUD.model, replicas=3),
        namespace=NAMESPACE,
        values=REGISTRY_VALUES,
    )
    assert objects == expected


def test_values_and_set_reach_the_template(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "mlflow": {"existingSecret": "mlflow", "secretKey": "uri"},
                "serving": {"autoscaling": {"enabled": False}},
                # parts of the chart that are not the endpoint stay off
                "server": {"enabled": True},
                "kueue": {"enabled": True},
            }
        )
    )
    code, objects, err = deploy(
        capsys,
        "-f",
        str(values),
        "--set",
        "monitoring.serviceMonitor.enabled=true",
        "--image",
        "registry.example.com/usina-serving:1.2.3",
        "--release",
        "platform",
        registry=False,  # the values file names the registry's Secret
    )
    assert code == 0, err
    assert [o["kind"] for o in objects] == [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ]
    for obj in objects:
        validate(obj)
    deployment = objects[0]
    assert deployment["metadata"]["name"] == "platform-usina-fraud"
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/usina-serving:1.2.3"
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow",
        "key": "uri",
    }


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--name", "Fraud_Champion"], 2, "must be a DNS label"),
        (["--set", "serving.maxBatchSize=many"], 1, "/serving/maxBatchSize"),
        (["--replicas", "0"], 2, "replicas"),
    ],
)
def test_bad_input_is_refused(
    capsys: pytest.CaptureFixture[str], args: list[str], code: int, message: str
) -> None:
    got, _, err = deploy(capsys, *args)
    assert got == code
    assert message in " ".join(err.split()) or message in err


class FakeApiServer:
    """Records server-side-apply PATCHes; answers 422 for names in ``reject``."""

    def __init__(self) -> None:
        self.requests: list[Obj] = []
        self.reject: set[str] = set()
        self.unavailable = 0  # the next PATCHes answered 503 (then as usual)
        self.kubeconfig = ""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_PATCH(self) -> None:
                url = urlparse(self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(
                    {
                        "path": url.path,
                        "query": {k: v[-1] for k, v in parse_qs(url.query).items()},
                        "content_type": self.headers["Content-Type"],
                        "authorization": self.headers["Authorization"],
                        "body": body,
                    }
                )
                code = 422 if body["metadata"]["name"] in fake.reject else 200
                if fake.unavailable > 0:
                    fake.unavailable -= 1
                    code = 503
                reply = (
                    {"kind": "Status", "code": 422, "message": "spec.replicas: Invalid value"}
                    if code == 422
                    else {"kind": "Status", "code": 503, "message": "etcd is busy"}
                    if code == 503
                    else body
                )
                data = json.dumps(reply).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    fake.thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": fake.url}}],
                "users": [{"name": "test", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                "current-context": "test",
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    fake.kubeconfig = str(kubeconfig)
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_apply_is_server_side_apply(capsys: pytest.CaptureFixture[str], api: FakeApiServer) -> None:
    code, _, err = deploy(
        capsys, "--namespace", NAMESPACE, "--apply", "--kubeconfig", api.kubeconfig
    )
    assert code == 0, err
    assert [r["path"] for r in api.requests] == [
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/usina-fraud",
        f"/api/v1/namespaces/{NAMESPACE}/services/usina-fraud",
        f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers/usina-fraud",
        f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets/usina-fraud",
    ]
    for request in api.requests:
        assert request["content_type"] == "application/apply-patch+yaml"
        assert request["query"] == {"fieldManager": "usina", "force": "true"}
        assert request["authorization"] == "Bearer t0ken"  # the kubeconfig's credentials
    assert (
        api.requests[0]["body"]
        == render_endpoint(FRAUD, namespace=NAMESPACE, values=REGISTRY_VALUES)[0]
    )
    assert "Deployment/usina-fraud applied" in err


def test_apply_failure_names_the_object(
    capsys: pytest.CaptureFixture[str], api: FakeApiServer
) -> None:
    api.reject.add("usina-fraud")
    code, _, err = deploy(capsys, "--apply", "--kubeconfig", api.kubeconfig)
    assert code == 1
    flat = " ".join(err.split())
    assert "could not apply Deployment/usina-fraud in namespace default: 422" in flat
    assert "spec.replicas: Invalid value" in flat


def test_apply_retries_what_a_retry_can_fix(
    capsys: pytest.CaptureFixture[str], api: FakeApiServer
) -> None:
    """A 503 is retried by the one Kubernetes client (as the backend's calls are)."""
    api.unavailable = 2
    code, _, err = deploy(
        capsys, "--namespace", NAMESPACE, "--apply", "--kubeconfig", api.kubeconfig
    )
    assert code == 0, err
    paths = [r["path"] for r in api.requests]
    assert paths[0] == paths[1] == paths[2]  # the first object, sent three times
    assert len(set(paths)) == len(paths) - 2


def test_context_picks_the_cluster(
    capsys: pytest.CaptureFixture[str], api: FakeApiServer, tmp_path: Path
) -> None:
    """``--context`` chooses among the kubeconfig's contexts (its current one is elsewhere)."""
    config = yaml.safe_load(Path(api.kubeconfig).read_text())
    config["clusters"].append({"name": "prod", "cluster": {"server": "http://127.0.0.1:9"}})
    config["contexts"].append({"name": "prod", "context": {"cluster": "prod", "user": "test"}})
    config["current-context"] = "prod"
    two = tmp_path / "two-contexts"
    two.write_text(yaml.safe_dump(config))
    code, _, err = deploy(
        capsys, "--namespace", NAMESPACE, "--apply", "--kubeconfig", str(two), "--context", "test"
    )
    assert code == 0, err
    assert api.requests
    code, _, err = deploy(
        capsys, "--namespace", NAMESPACE, "--apply", "--kubeconfig", str(two), "--context", "nope"
    )
    assert code != 0
    assert "context 'nope'" in err


def test_an_endpoint_that_cannot_reach_its_model_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["deploy", "models:/fraud@champion", "--name", "fraud"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "no registry is configured" in err
    assert "--registry-uri" in err
    code = main(["deploy", "/home/me/model", "--name", "fraud"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "path on this machine" in err
    code = main(
        ["deploy", "models:/fraud@champion", "--name", "fraud",
         "--registry-uri", "https://user:pw@mlflow.example.com"]
    )  # fmt: skip
    assert code == 2
    assert "carries credentials" in capsys.readouterr().err


def test_registry_credentials_and_pod_access_reach_the_deployment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "deploy", "models:/fraud@champion", "--name", "fraud", "--namespace", NAMESPACE,
            "--registry-uri", "http://mlflow.ml.svc:5000",
            "--service-account", "fraud-serving",
            "--image-pull-secret", "regcred",
            "--env-from-secret", "s3-credentials",
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    deployment = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment")
    validate(deployment)
    pod = deployment["spec"]["template"]["spec"]
    main_container = pod["containers"][0]
    assert pod["serviceAccountName"] == "fraud-serving"
    assert pod["automountServiceAccountToken"] is False
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert main_container["imagePullPolicy"] == "Always"  # the chart's (checkov CKV_K8S_15)
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.ml.svc:5000"} in main_container[
        "env"
    ]
    assert main_container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]


def test_a_rollout_reaches_every_pod_as_usina_serve_parses_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--rollout`` renders the challenger and its gates into the endpoint's ``usina serve``
    arguments; parsed by the real ``serve`` command, they make the policy the flags asked for."""
    import typer

    from usina.serving.cli import _rollout_policy, app

    code, objects, err = deploy(
        capsys, "--namespace", NAMESPACE,
        "--rollout", "canary", "--challenger", "models:/fraud/7",
        "--rollout-steps", "10,50,100", "--rollout-step-seconds", "120",
        "--max-error-rate", "0.02", "--max-p99-ms", "50", "--min-samples", "200",
    )  # fmt: skip
    assert code == 0, err
    for obj in objects:
        validate(obj)
    container = objects[0]["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[0] == "serve"
    command = typer.main.get_command(app())
    params = command.make_context("serve", args[1:]).params
    assert list(params["model_uri"]) == ["models:/fraud@champion"]
    assert params["rollout"] == "canary"
    assert params["challenger"] == "models:/fraud/7"
    assert params["workers"] == 1  # a rollout is judged in one process per pod
    policy = _rollout_policy(
        params["rollout"], params["rollout_steps"], params["rollout_step_seconds"],
        params["max_error_rate"], params["max_p99_ms"], params["max_p99_ratio"],
        params["max_score_drift"], params["min_samples"],
    )  # fmt: skip
    assert policy.steps == (10, 50, 100)
    assert policy.step_s == 120
    assert policy.gates.max_error_rate == 0.02
    assert policy.gates.max_p99_ms == 50
    assert policy.gates.min_samples == 200
    # Without --rollout the endpoint has no challenger.
    code, objects, err = deploy(capsys, "--namespace", NAMESPACE)
    assert code == 0, err
    plain = objects[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in plain if a.startswith(("--rollout", "--challenger"))]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-error-rate", "0.1"], "--max-error-rate only apply to a rollout"),
        (["--rollout", "blue-green"], "must be shadow or canary"),
        (["--rollout", "canary", "--rollout-steps", "5,half"], "--rollout-steps"),
        (["--rollout", "canary", "--rollout-steps", "5,250"], "/rollout/steps"),
        (["--rollout", "shadow", "--max-error-rate", "2"], "/rollout/maxErrorRate"),
    ],
)
def test_a_bad_rollout_is_refused(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    got, _, err = deploy(capsys, *args)
    assert got in (1, 2), err
    assert message in " ".join(err.split())


def test_refusals_read_in_portuguese_with_lang(capsys: pytest.CaptureFixture[str]) -> None:
    def refused(*args: str) -> str:
        assert main(["--lang", "pt-BR", "deploy", *args]) == 2
        return " ".join(capsys.readouterr().err.split())

    bad_name = refused("models:/fraud@champion", "--name", "Fraud_Champion", *REGISTRY)
    assert "não é possível implantar o endpoint 'Fraud_Champion': o nome do endpoint " in bad_name
    assert "'Fraud_Champion' precisa ser um rótulo DNS" in bad_name
    secret = refused("models:/fraud@champion", "--name", "fraud", "--registry-secret", "Bad_S")
    assert "erro: --registry-secret='Bad_S' não é um subdomínio DNS-1123 (letras" in secret
    local = refused("/home/me/model", "--name", "fraud")
    assert "/home/me/model é um caminho nesta máquina, que os pods do endpoint" in local
    assert "must be" not in bad_name + secret
    assert "path on this machine" not in local
