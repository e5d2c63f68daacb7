"""usina's Helm chart, rendered offline by Helm's own Go SDK (``helm-python-sdk``).

The chart lives in the repository at ``deploy/helm/usina`` and travels inside the wheel as
``usina/deploy/helm/usina``. Rendering never contacts a cluster. ``render_endpoint`` renders the
chart's serving template (``templates/serving/``) for one endpoint, with every other part of the
chart switched off, so ``usina deploy`` and ``helm install`` produce the same objects.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usina.errors import DefinitionError, DeployError, MissingExtraError
from usina.i18n import N_, Said, error

Obj = dict[str, Any]
#: The rendered templates of a serving endpoint, by path inside the chart.
SERVING_TEMPLATES = "templates/serving/"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

_NAME = N_(
    "endpoint name {name!r} must be a DNS label: at most 63 lower-case letters, digits and '-', "
    "starting and ending with a letter or digit"
)
_RELEASE = N_("release name {release!r} must be a DNS label of at most 53 characters")
_NO_MODEL = N_("the model URI is empty (e.g. models:/fraud@champion)")
_REPLICAS = N_("replicas must be at least 1, not {replicas}")
#: What ``Endpoint.problems`` may find (English, read in the reader's language where shown).
PROBLEM_TEXTS = (_NAME, _RELEASE, _NO_MODEL, _REPLICAS)
#: The message of an endpoint that cannot be deployed (here and in ``usina.deploy.cli``).
CANNOT_DEPLOY = N_("cannot deploy endpoint {name!r}: {problem}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One model-serving endpoint (an entry of the chart's ``serving.endpoints``).

    name: DNS label; the objects are named ``<full name>-<name>`` (the full name is the
        release's, with ``-usina`` unless the release name contains it, as Helm charts do).
    model: the registry URI ``usina serve`` loads (``models:/fraud@champion``).
    replicas: pods (with autoscaling on: the minimum); None keeps the chart's default.
    image: full image reference of ``usina serve``; None keeps the chart's ``images.serving``.
    rollout: the entry's ``rollout`` values (``mode``, ``challenger``, ``steps``, gates; see
        the chart's values schema); None: no challenger.
    """

    name: str
    model: str
    replicas: int | None = None
    image: str | None = None
    rollout: Obj | None = None

    def problems(self, release: str) -> list[str]:
        found = []
        if not _DNS_LABEL.match(self.name) or len(self.name) > 63:
            found.append(_NAME.format(name=self.name))
        if not _DNS_LABEL.match(release) or len(release) > 53:
            found.append(_RELEASE.format(release=release))
        if not self.model.strip():
            found.append(_NO_MODEL)
        if self.replicas is not None and self.replicas < 1:
            found.append(_REPLICAS.format(replicas=self.replicas))
        return found

    def values(self) -> Obj:
        entry: Obj = {"name": self.name, "model": self.model}
        if self.replicas is not None:
            entry["replicas"] = self.replicas
        if self.image:
            entry["image"] = self.image
        if self.rollout:
            entry["rollout"] = dict(self.rollout)
        return entry


def chart_path() -> Path:
    """The chart's folder: the copy inside the installed package, else the repository's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "helm" / "usina", here.parents[2] / "deploy" / "helm" / "usina"):
        if (candidate / "Chart.yaml").is_file():
            return candidate
    raise error(
        DeployError,
        N_(
            "usina's Helm chart is not installed with this package; pass its folder with "
            "--chart (deploy/helm/usina in the repository)"
        ),
    )


def load_helm() -> Any:
    try:
        import helm_python
    except ImportError as exc:
        raise MissingExtraError("helm-python-sdk", "deploy") from exc
    return helm_python


def parse_objects(manifests: dict[str, str], prefix: str | None = None) -> list[Obj]:
    """The objects of rendered templates (``{path: yaml}``), in the order Helm lists them."""
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - pyyaml comes with the deploy extra
        raise MissingExtraError("pyyaml", "deploy") from exc
    objects: list[Obj] = []
    for path, text in manifests.items():
        if not path.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        if prefix is not None and prefix not in path:
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def render_chart(
    values: Obj | None = None,
    *,
    release: str = "usina",
    namespace: str = "default",
    chart: Path | None = None,
) -> dict[str, str]:
    """Render the chart as ``helm template`` would: ``{template path: YAML}``.

    The values are merged over the chart's defaults and checked against its
    ``values.schema.json`` first; a wrong type raises ``DeployError`` naming the key.
    """
    helm = load_helm()
    path = chart or chart_path()
    try:
        with helm.Chart.load(str(path)) as loaded:
            merged = loaded.merge_values(values or {})
            loaded.validate_schema(merged)
            rendered: dict[str, str] = loaded.render(
                merged, name=release, namespace=namespace, is_install=True
            )
    except helm.HelmError as exc:
        raise error(
            DeployError,
            N_("the Helm chart at {path} did not render: {error}"),
            path=path,
            error=str(exc),
        ) from exc
    return rendered


def endpoint_values(endpoint: Endpoint, values: Obj | None = None) -> Obj:
    """``values`` with only ``endpoint`` enabled: no server, RBAC, Kueue or dashboards."""
    out = copy.deepcopy(values or {})
    out.setdefault("server", {})["enabled"] = False
    out.setdefault("serviceAccount", {})["create"] = False
    out.setdefault("rbac", {})["create"] = False
    out.setdefault("kueue", {})["enabled"] = False
    monitoring = out.setdefault("monitoring", {})
    monitoring.setdefault("prometheusRule", {})["enabled"] = False
    monitoring.setdefault("grafanaDashboard", {})["enabled"] = False
    out.setdefault("serving", {})["endpoints"] = [endpoint.values()]
    return out


def render_endpoint(
    endpoint: Endpoint,
    *,
    namespace: str = "default",
    release: str = "usina",
    values: Obj | None = None,
    chart: Path | None = None,
) -> list[Obj]:
    """The Kubernetes objects of one serving endpoint, from the chart's serving template:
    Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget (and a ServiceMonitor
    and NetworkPolicy where ``values`` turn those on)."""
    problems = endpoint.problems(release)
    if problems:
        raise error(
            DefinitionError,
            CANNOT_DEPLOY,
            name=endpoint.name,
            problem=Said(problems, PROBLEM_TEXTS),
        )
    rendered = render_chart(
        endpoint_values(endpoint, values), release=release, namespace=namespace, chart=chart
    )
    objects = parse_objects(rendered, SERVING_TEMPLATES)
    if not objects:  # pragma: no cover - the chart always renders a Deployment per endpoint
        raise DeployError(f"the chart rendered no object for endpoint {endpoint.name!r}")
    name = objects[0]["metadata"]["name"]
    if not name.endswith(f"-{endpoint.name}"):  # the chart cut it at 63 characters
        raise error(
            DefinitionError,
            N_(
                "endpoint {endpoint!r} of release {release!r} would be named {name!r} (cut at "
                "63 characters): choose a shorter endpoint or release name"
            ),
            endpoint=endpoint.name,
            release=release,
            name=name,
        )
    return objects
