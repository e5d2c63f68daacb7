"""``usina deploy``: a model-serving endpoint from the Helm chart's serving template.

Prints the endpoint's manifests (YAML, ``kubectl apply -f -`` ready), or applies them to the
cluster of the current kubeconfig context (or the in-cluster service account) with ``--apply``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from usina.deploy.apply import apply_objects
from usina.deploy.chart import CANNOT_DEPLOY, Endpoint, render_endpoint
from usina.errors import DefinitionError, MissingExtraError
from usina.i18n import N_, Said, _, error

_CREDENTIALS = N_(
    "--registry-uri carries credentials; put the URI in a Secret and pass "
    "--registry-secret SECRET[/KEY] instead"
)
_PULL_POLICY = N_("--image-pull-policy {policy!r} must be IfNotPresent, Always or Never")
_NO_REGISTRY = N_(
    "{model} is a model registry URI, but no registry is configured, so the pods could not "
    "load it: pass --registry-uri http://MLFLOW:5000 or --registry-secret SECRET[/KEY] (a "
    "Secret holding the URI), or --set mlflow.existingSecret=SECRET"
)
_LOCAL_MODEL = N_(
    "{model} is a path on this machine, which the endpoint's pods cannot read: register the "
    "model (models:/NAME@ALIAS) or give an s3:// URI"
)
#: The problems of ``endpoint_access`` and ``unreachable_model`` besides Kubernetes' naming
#: rules: English where made, in the reader's language where shown (``usina.i18n.Said``).
PROBLEM_TEXTS = (_CREDENTIALS, _PULL_POLICY, _NO_REGISTRY, _LOCAL_MODEL)


def deploy(
    model: Annotated[str, typer.Argument(help="model URI, e.g. models:/fraud@champion")],
    name: Annotated[str, typer.Option("--name", help="endpoint name (a DNS label)")],
    namespace: Annotated[str, typer.Option(help="namespace of the endpoint")] = "default",
    image: Annotated[
        str | None, typer.Option(help="image of usina serve (default: the chart's)")
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option(min=1, help="pods; with autoscaling on, the minimum (default: the chart's)"),
    ] = None,
    release: Annotated[
        str, typer.Option(help="the usina Helm release whose Secrets the endpoint reads")
    ] = "usina",
    values: Annotated[
        list[Path], typer.Option("--values", "-f", help="chart values file; repeatable")
    ] = [],  # noqa: B006
    set_: Annotated[
        list[str], typer.Option("--set", help="chart value, as helm --set KEY=VALUE; repeatable")
    ] = [],  # noqa: B006
    chart: Annotated[
        Path | None, typer.Option(help="chart folder (default: the one shipped with usina)")
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="server-side apply them instead of printing")
    ] = False,
    registry_uri: Annotated[
        str | None,
        typer.Option(
            "--registry-uri",
            help="MLflow tracking/registry URI the endpoint loads its model from "
            "(no credentials in it: use --registry-secret for those)",
        ),
    ] = None,
    registry_secret: Annotated[
        str | None,
        typer.Option(
            "--registry-secret",
            help="SECRET[/KEY]: a Secret holding the registry URI (default key tracking-uri)",
        ),
    ] = None,
    service_account: Annotated[
        str | None, typer.Option("--service-account", help="the endpoint pods' service account")
    ] = None,
    image_pull_secret: Annotated[
        list[str], typer.Option("--image-pull-secret", help="Secret to pull the image")
    ] = [],  # noqa: B006
    image_pull_policy: Annotated[
        str | None,
        typer.Option(
            "--image-pull-policy", help="Always (the chart's default), IfNotPresent or Never"
        ),
    ] = None,
    env_from_secret: Annotated[
        str | None,
        typer.Option(
            "--env-from-secret",
            help="Secret whose keys become env, e.g. the object store's AWS_* credentials",
        ),
    ] = None,
    rollout: Annotated[
        str | None,
        typer.Option(
            "--rollout",
            help="roll out a challenger beside the model in every pod: shadow or canary",
        ),
    ] = None,
    challenger: Annotated[
        str | None,
        typer.Option("--challenger", help="the challenger (default: models:/NAME@challenger)"),
    ] = None,
    rollout_steps: Annotated[
        str | None,
        typer.Option("--rollout-steps", help="canary shares in percent, e.g. 5,25,50,100"),
    ] = None,
    rollout_step_seconds: Annotated[
        float | None, typer.Option("--rollout-step-seconds", help="seconds per canary step")
    ] = None,
    max_error_rate: Annotated[
        float | None, typer.Option("--max-error-rate", help="gate: challenger error rate ceiling")
    ] = None,
    max_p99_ms: Annotated[
        float | None, typer.Option("--max-p99-ms", help="gate: challenger p99 ceiling, ms")
    ] = None,
    max_p99_ratio: Annotated[
        float | None,
        typer.Option("--max-p99-ratio", help="gate: challenger p99 / champion p99 ceiling"),
    ] = None,
    max_score_drift: Annotated[
        float | None,
        typer.Option("--max-score-drift", help="gate: |mean score change| vs the champion"),
    ] = None,
    min_samples: Annotated[
        int | None,
        typer.Option("--min-samples", help="gate: challenger requests needed to judge a step"),
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context for --apply")] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="kubeconfig file for --apply (default: $KUBECONFIG)")
    ] = None,
) -> None:
    """Render (or --apply) a serving endpoint: Deployment, Service, HPA and PDB."""
    chart_values = _values(values, set_)
    _merge(
        chart_values,
        endpoint_access(
            registry_uri=registry_uri,
            registry_secret=registry_secret,
            service_account=service_account,
            image_pull_secrets=image_pull_secret,
            image_pull_policy=image_pull_policy,
            env_from_secret=env_from_secret,
        ),
    )
    problem = unreachable_model(model, chart_values)
    if problem is not None:
        raise error(
            DefinitionError, CANNOT_DEPLOY, name=name, problem=Said([problem], PROBLEM_TEXTS)
        )
    plan = rollout_values(
        rollout,
        challenger=challenger,
        steps=rollout_steps,
        stepSeconds=rollout_step_seconds,
        maxErrorRate=max_error_rate,
        maxP99Ms=max_p99_ms,
        maxP99Ratio=max_p99_ratio,
        maxScoreDrift=max_score_drift,
        minSamples=min_samples,
    )
    objects = render_endpoint(
        Endpoint(name=name, model=model, replicas=replicas, image=image, rollout=plan),
        namespace=namespace,
        release=release,
        values=chart_values,
        chart=chart,
    )
    if not apply:
        import yaml

        sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
        return
    api = _api_client(context, kubeconfig)
    try:
        for what in apply_objects(objects, api):
            said = _("{what} applied (namespace {namespace})")
            typer.echo(said.format(what=what, namespace=namespace), err=True)
    finally:
        api.close()


def endpoint_access(
    *,
    registry_uri: str | None = None,
    registry_secret: str | None = None,
    service_account: str | None = None,
    image_pull_secrets: list[str] | None = None,
    image_pull_policy: str | None = None,
    env_from_secret: str | None = None,
) -> dict[str, Any]:
    """Chart values for what the endpoint's pods need to reach their model and image, from
    the flags (the same names as ``usina run``'s and the server's per-project settings)."""
    from usina.backends.kubernetes import validation as v

    found: dict[str, Any] = {}
    problems: list[str] = []
    if registry_secret:
        secret, _sep, key = registry_secret.partition("/")
        problems += v.dns1123_subdomain("--registry-secret", secret)
        found["mlflow"] = {"existingSecret": secret, **({"secretKey": key} if key else {})}
    if registry_uri:
        if "@" in registry_uri.partition("://")[2].partition("/")[0]:
            problems.append(_CREDENTIALS)
        found.setdefault("serving", {})["extraEnv"] = [
            {"name": "MLFLOW_TRACKING_URI", "value": registry_uri}
        ]
    if service_account:
        problems += v.dns1123_subdomain("--service-account", service_account)
        found.setdefault("serving", {})["serviceAccount"] = service_account
    if image_pull_secrets:
        problems += v.each(v.dns1123_subdomain, "--image-pull-secret", image_pull_secrets)
        found["imagePullSecrets"] = [{"name": n} for n in image_pull_secrets]
    if image_pull_policy:
        if image_pull_policy not in ("IfNotPresent", "Always", "Never"):
            problems.append(_PULL_POLICY.format(policy=image_pull_policy))
        found["images"] = {"serving": {"pullPolicy": image_pull_policy}}
    if env_from_secret:
        problems += v.dns1123_subdomain("--env-from-secret", env_from_secret)
        found["objectStore"] = {"existingSecret": env_from_secret}
    if problems:
        # The problems are the whole message: "{problems}" is its id.
        said = Said(problems, (*v.PROBLEM_TEXTS, *PROBLEM_TEXTS))
        raise error(DefinitionError, N_("{problems}"), problems=said)
    return found


def rollout_values(mode: str | None, **given: Any) -> dict[str, Any] | None:
    """The endpoint's ``rollout`` chart values from the flags (None without ``--rollout``).

    The chart's values schema checks ranges and names; this only turns ``--rollout-steps``
    into numbers and refuses gate flags given without a rollout.
    """
    chosen = {k: v for k, v in given.items() if v is not None}
    if mode is None:
        if chosen:
            flags = ", ".join(sorted(_FLAG[k] for k in chosen))
            raise error(
                DefinitionError,
                N_("{flags} only apply to a rollout: add --rollout shadow|canary"),
                flags=flags,
            )
        return None
    if mode not in ("shadow", "canary"):
        raise error(DefinitionError, N_("--rollout {mode!r} must be shadow or canary"), mode=mode)
    steps = chosen.pop("steps", None)
    if steps is not None:
        try:
            chosen["steps"] = [int(s) for s in steps.split(",") if s.strip()]
        except ValueError:
            raise error(
                DefinitionError,
                N_(
                    "--rollout-steps {steps!r} must be percentages separated by commas, "
                    "e.g. 5,25,50,100"
                ),
                steps=steps,
            ) from None
    return {"mode": mode, **chosen}


_FLAG = {
    "challenger": "--challenger",
    "steps": "--rollout-steps",
    "stepSeconds": "--rollout-step-seconds",
    "maxErrorRate": "--max-error-rate",
    "maxP99Ms": "--max-p99-ms",
    "maxP99Ratio": "--max-p99-ratio",
    "maxScoreDrift": "--max-score-drift",
    "minSamples": "--min-samples",
}


def unreachable_model(model: str, values: dict[str, Any]) -> str | None:
    """Why an endpoint with these chart values could not load ``model``, or None."""
    scheme = model.partition(":")[0] if ":" in model else ""
    if scheme in ("models", "runs"):
        mlflow = values.get("mlflow") or {}
        env = [
            e.get("name")
            for e in (values.get("serving") or {}).get("extraEnv") or []
            if isinstance(e, dict)
        ]
        if (
            not (mlflow.get("existingSecret") or mlflow.get("trackingUri"))
            and "MLFLOW_TRACKING_URI" not in env
        ):
            return _NO_REGISTRY.format(model=model)
        return None
    if not scheme or scheme == "file" or model.startswith("/"):
        return _LOCAL_MODEL.format(model=model)
    return None


def _values(files: list[Path], sets: list[str]) -> dict[str, Any]:
    """Values files merged in order, then ``--set`` expressions, as helm does."""
    import yaml

    from usina.deploy.chart import load_helm

    merged: dict[str, Any] = {}
    for path in files:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise error(
                DefinitionError, N_("cannot read values file {path}: {error}"), path=path, error=exc
            ) from exc
        if not isinstance(loaded, dict):
            raise error(
                DefinitionError,
                N_("values file {path} must hold a mapping of chart values"),
                path=path,
            )
        _merge(merged, loaded)
    helm = load_helm()
    for expression in sets:
        try:
            _merge(merged, helm.parse_set_string(expression))
        except helm.HelmError as exc:
            raise error(
                DefinitionError,
                N_("--set {expression!r}: {error}"),
                expression=expression,
                error=exc,
            ) from exc
    return merged


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _api_client(context: str | None, kubeconfig: Path | None) -> Any:
    try:
        from usina.backends.kubernetes.client import api_client
    except ImportError as exc:
        raise MissingExtraError(exc.name or "kubernetes", "deploy") from exc
    return api_client(context, kubeconfig)
