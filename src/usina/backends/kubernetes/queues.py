"""Team quotas as code: the Kueue objects that share a GPU cluster between teams.

A ``QueueConfig`` names the GPU types and capacity types (on-demand, spot) of the cluster, the
teams with their nominal quotas, the priorities, and whether on-demand capacity comes from an
autoscaler through a ProvisioningRequest admission check. ``render_queues`` turns it into
``kueue.x-k8s.io/v1beta2`` objects:

- one ``ResourceFlavor`` per GPU type x capacity type (``h100-spot``), with the node labels that
  select those nodes and, for tainted capacity (spot), the taint and the toleration Kueue adds
  to the pods it admits there;
- one ``ClusterQueue`` per team, in one cohort, listing every flavor (quota 0 where the team has
  none, so that it can still borrow there), with ``borrowingLimit`` / ``lendingLimit`` and the
  preemption policy: within the queue by priority, reclaim within the cohort, and borrowers may
  only displace work at or below a priority threshold;
- a ``WorkloadPriorityClass`` per priority (a step's ``priority=`` names one);
- a ``LocalQueue`` per team namespace, named after the team (a project's Jobs carry
  ``kueue.x-k8s.io/queue-name: <team>``);
- with provisioning on: an ``AdmissionCheck`` and its ``ProvisioningRequestConfig`` that ask
  cluster-autoscaler for nodes before a workload on an autoscaled flavor is admitted.

The Helm chart (``templates/kueue/team-queues.yaml``) renders the same objects from the same
shape of values (``kueue.teamQueues``); a test pins the two to each other. ``usina k8s queues
render`` prints them for clusters whose Kueue objects are managed outside the chart.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usina.errors import DefinitionError
from usina.sdk.resources import QuantityError, parse_quantity

if TYPE_CHECKING:
    from collections.abc import Mapping

KUEUE_API = "kueue.x-k8s.io/v1beta2"
#: Label of a namespace's name (set by the API server on every namespace).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PREEMPT_WITHIN = ("Never", "LowerPriority", "LowerOrNewerEqualPriority")
_RECLAIM = ("Never", "LowerPriority", "Any")
_BORROW = ("Never", "LowerPriority")
Obj = dict[str, Any]


class CapacityKind(enum.StrEnum):
    """How nodes of a flavor are bought: they differ in price, in whether they can be taken
    away (spot), and in whether the autoscaler adds them on demand."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"
    RESERVED = "reserved"


@dataclass(frozen=True, slots=True)
class GpuType:
    """A GPU model in the cluster.

    name: short DNS label used in flavor names ("h100").
    product: the value of the GPU product node label ("NVIDIA-H100-80GB-HBM3"), the same value a
        step's ``Resources(gpu_type=...)`` names.
    """

    name: str
    product: str


@dataclass(frozen=True, slots=True)
class CapacityType:
    """A way nodes are bought.

    name: DNS label used in flavor names ("on-demand", "spot").
    kind: on-demand / spot / reserved.
    node_label: value of ``QueueConfig.capacity_label`` on these nodes; default: ``name``.
    taint: nodes carry the taint ``<capacity_label>=<node_label>:NoSchedule`` and Kueue adds the
        matching toleration to pods admitted on the flavor (spot: only jobs that may be
        interrupted land there). Default: True for spot.
    autoscaled: the autoscaler adds these nodes on demand; with provisioning on, a workload
        admitted on this flavor waits for a ProvisioningRequest first. Default: True for
        on-demand and spot.
    """

    name: str
    kind: CapacityKind = CapacityKind.ON_DEMAND
    node_label: str | None = None
    taint: bool | None = None
    autoscaled: bool | None = None

    @property
    def label_value(self) -> str:
        return self.node_label or self.name

    @property
    def tainted(self) -> bool:
        return self.kind is CapacityKind.SPOT if self.taint is None else self.taint

    @property
    def scales(self) -> bool:
        return (
            self.kind is not CapacityKind.RESERVED if self.autoscaled is None else self.autoscaled
        )


@dataclass(frozen=True, slots=True)
class Priority:
    """A ``WorkloadPriorityClass``: queueing and preemption order inside Kueue (not pod
    priority). value: higher goes first and may preempt lower."""

    name: str
    value: int
    description: str = ""


@dataclass(frozen=True, slots=True)
class Team:
    """A team's share of the cluster.

    name: DNS label; its ClusterQueue is ``<name>``, its LocalQueues ``<name>`` in each namespace.
    namespaces: where its projects run (one LocalQueue each); the ClusterQueue admits only those.
    quotas: nominal quota per flavor name, per resource ({"h100-on-demand": {"nvidia.com/gpu":
        32}}); flavors not named get 0 (the team can only borrow there).
    borrowing_limit: per resource, the most the team may borrow above its nominal quota on each
        flavor; absent: no limit (the whole cohort's unused quota).
    lending_limit: per resource, the most of its unused nominal quota others may borrow on each
        flavor; absent: all of it.
    """

    name: str
    namespaces: tuple[str, ...]
    quotas: Mapping[str, Mapping[str, str | int]] = field(default_factory=dict)
    borrowing_limit: Mapping[str, str | int] = field(default_factory=dict)
    lending_limit: Mapping[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Preemption:
    """The ClusterQueues' preemption policy (Kueue's classic preemption).

    within_cluster_queue: a pending workload may preempt lower-priority ones of its own team.
    reclaim_within_cohort: a team under its nominal quota takes it back from borrowers.
    borrow_within_cohort: a borrowing workload may preempt lower-priority work of other teams,
        only at or below ``borrow_max_priority`` (None: any lower priority).
    """

    within_cluster_queue: str = "LowerPriority"
    reclaim_within_cohort: str = "Any"
    borrow_within_cohort: str = "LowerPriority"
    borrow_max_priority: int | None = 100


@dataclass(frozen=True, slots=True)
class Provisioning:
    """On-demand capacity through cluster-autoscaler's ProvisioningRequest API.

    name: the AdmissionCheck and ProvisioningRequestConfig name.
    class_name: ``check-capacity.autoscaling.x-k8s.io`` (nodes exist or can be added) or
        ``best-effort-atomic-scale-up.autoscaling.x-k8s.io`` (add all the nodes or none).
    managed_resources: resources the autoscaler provisions for (others do not trigger it).
    retry_limit / retry_base_seconds / retry_max_seconds: a failed request is retried this many
        times with delay min(base^n, max); then the workload's reserved quota is released.
    """

    name: str = "gpu-provisioning"
    class_name: str = "check-capacity.autoscaling.x-k8s.io"
    managed_resources: tuple[str, ...] = ("nvidia.com/gpu",)
    retry_limit: int = 3
    retry_base_seconds: int = 60
    retry_max_seconds: int = 1800


DEFAULT_PRIORITIES = (
    Priority("batch", 100, "Interruptible batch work; borrowers may preempt it."),
    Priority("normal", 1000, "The default for pipeline steps."),
    Priority("urgent", 10000, "Production retraining and incident work."),
)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Everything ``render_queues`` needs; see the module docstring."""

    teams: tuple[Team, ...]
    gpu_types: tuple[GpuType, ...]
    capacity_types: tuple[CapacityType, ...] = (
        CapacityType("on-demand"),
        CapacityType("spot", CapacityKind.SPOT),
    )
    cohort: str = "usina"
    covered_resources: tuple[str, ...] = ("cpu", "memory", "nvidia.com/gpu")
    gpu_label: str = "nvidia.com/gpu.product"
    capacity_label: str = "usina.dev/capacity"
    priorities: tuple[Priority, ...] = DEFAULT_PRIORITIES
    preemption: Preemption = Preemption()
    queueing_strategy: str = "BestEffortFIFO"
    provisioning: Provisioning | None = None

    def flavor_names(self) -> list[str]:
        return [flavor_name(g, c) for g in self.gpu_types for c in self.capacity_types]

    def problems(self) -> list[str]:
        """What is wrong with this configuration, in words an operator can act on (Kueue's
        own webhook rules included, which the CRD schemas alone do not check)."""
        found: list[str] = []
        flavors = self.flavor_names()
        names = [("cohort", self.cohort)]
        names += [("GPU type", g.name) for g in self.gpu_types]
        names += [("capacity type", c.name) for c in self.capacity_types]
        names += [("team", t.name) for t in self.teams]
        names += [("priority", p.name) for p in self.priorities]
        names += [("namespace", ns) for t in self.teams for ns in t.namespaces]
        names += [("flavor", f) for f in flavors]
        for what, name in names:
            if not _DNS_LABEL.match(name) or len(name) > 63:
                found.append(
                    f"{what} name {name!r} must be a DNS label (at most 63 lower-case letters, "
                    "digits and '-', starting and ending with a letter or digit)"
                )
        for what, items in (
            ("GPU type", [g.name for g in self.gpu_types]),
            ("capacity type", [c.name for c in self.capacity_types]),
            ("team", [t.name for t in self.teams]),
            ("priority", [p.name for p in self.priorities]),
        ):
            dupes = sorted({n for n in items if items.count(n) > 1})
            if dupes:
                found.append(f"{what} names must be unique; repeated: {', '.join(dupes)}")
        if not self.gpu_types:
            found.append("no GPU types: name at least one (name and product label value)")
        if not self.teams:
            found.append("no teams: name at least one team with its namespaces and quotas")
        if len(flavors) > 16:
            found.append(
                f"{len(flavors)} flavors (GPU types x capacity types); Kueue allows at most 16 "
                "per resource group"
            )
        if not 1 <= len(self.covered_resources) <= 16:
            found.append("covered_resources must list 1 to 16 resources")
        owners: dict[str, str] = {}
        for team in self.teams:
            if not team.namespaces:
                found.append(f"team {team.name!r} has no namespaces; its projects need one")
            for ns in team.namespaces:
                if ns in owners and owners[ns] != team.name:
                    found.append(
                        f"namespace {ns!r} belongs to teams {owners[ns]!r} and {team.name!r}; "
                        "a namespace submits to one team's queue"
                    )
                owners[ns] = team.name
            for flavor, quota in team.quotas.items():
                if flavor not in flavors:
                    found.append(
                        f"team {team.name!r} has a quota on unknown flavor {flavor!r}; "
                        f"flavors are: {', '.join(flavors)}"
                    )
                found += _quantity_problems(f"team {team.name!r} quota on {flavor}", quota, self)
            found += _quantity_problems(
                f"team {team.name!r} borrowing_limit", team.borrowing_limit, self
            )
            found += _quantity_problems(
                f"team {team.name!r} lending_limit", team.lending_limit, self
            )
            found += _lending_problems(team)
        p = self.preemption
        for what, value, allowed in (
            ("within_cluster_queue", p.within_cluster_queue, _PREEMPT_WITHIN),
            ("reclaim_within_cohort", p.reclaim_within_cohort, _RECLAIM),
            ("borrow_within_cohort", p.borrow_within_cohort, _BORROW),
        ):
            if value not in allowed:
                found.append(f"preemption {what}={value!r} must be one of {', '.join(allowed)}")
        if p.reclaim_within_cohort == "Never" and p.borrow_within_cohort != "Never":
            found.append(
                "preemption: borrow_within_cohort must be Never when reclaim_within_cohort is "
                "Never (Kueue rejects the ClusterQueue)"
            )
        if self.queueing_strategy not in ("BestEffortFIFO", "StrictFIFO"):
            found.append(
                f"queueing_strategy={self.queueing_strategy!r} must be BestEffortFIFO or StrictFIFO"
            )
        if self.provisioning is not None and not any(c.scales for c in self.capacity_types):
            found.append("provisioning is on but no capacity type is autoscaled")
        return found


def _quantity_problems(
    what: str, values: Mapping[str, str | int], config: QueueConfig
) -> list[str]:
    found = []
    for resource, value in values.items():
        if resource not in config.covered_resources:
            found.append(
                f"{what} names {resource!r}, which is not a covered resource "
                f"({', '.join(config.covered_resources)}); add it to covered_resources"
            )
        try:
            if parse_quantity(value) < 0:
                found.append(f"{what}: {resource}={value!r} must not be negative")
        except QuantityError as exc:
            found.append(f"{what}: {resource}: {exc}")
    return found


def _lending_problems(team: Team) -> list[str]:
    found = []
    for flavor, quota in team.quotas.items():
        for resource, limit in team.lending_limit.items():
            if resource not in quota:
                continue
            try:
                over = parse_quantity(limit) > parse_quantity(quota[resource])
            except QuantityError:
                continue  # reported with the quantities
            if over:
                found.append(
                    f"team {team.name!r} lending_limit {resource}={limit} is more than its "
                    f"nominal quota on {flavor} ({quota[resource]}); lend at most the quota"
                )
    return found


def flavor_name(gpu: GpuType, capacity: CapacityType) -> str:
    return f"{gpu.name}-{capacity.name}"


def queue_name(team: str) -> str:
    """The LocalQueue (and ClusterQueue) of a team: a project's Jobs name it."""
    return team


def _quantity(value: str | int) -> str:
    return str(value)


def render_flavors(config: QueueConfig) -> list[Obj]:
    out: list[Obj] = []
    for gpu in config.gpu_types:
        for capacity in config.capacity_types:
            spec: Obj = {
                "nodeLabels": {
                    config.gpu_label: gpu.product,
                    config.capacity_label: capacity.label_value,
                }
            }
            if capacity.tainted:
                taint = {
                    "key": config.capacity_label,
                    "value": capacity.label_value,
                    "effect": "NoSchedule",
                }
                spec["nodeTaints"] = [taint]
                spec["tolerations"] = [{**taint, "operator": "Equal"}]
            out.append(_object("ResourceFlavor", flavor_name(gpu, capacity), spec))
    return out


def render_cluster_queue(team: Team, config: QueueConfig) -> Obj:
    flavors = []
    for name in config.flavor_names():
        quota = team.quotas.get(name, {})
        resources = []
        for resource in config.covered_resources:
            entry: Obj = {"name": resource, "nominalQuota": _quantity(quota.get(resource, 0))}
            if resource in team.borrowing_limit:
                entry["borrowingLimit"] = _quantity(team.borrowing_limit[resource])
            if resource in team.lending_limit and resource in quota:
                # Only where the team has a quota to lend (Kueue wants lendingLimit <= nominal).
                entry["lendingLimit"] = _quantity(team.lending_limit[resource])
            resources.append(entry)
        flavors.append({"name": name, "resources": resources})
    p = config.preemption
    borrow: Obj = {"policy": p.borrow_within_cohort}
    if p.borrow_within_cohort != "Never" and p.borrow_max_priority is not None:
        borrow["maxPriorityThreshold"] = p.borrow_max_priority
    spec: Obj = {
        "cohortName": config.cohort,
        "namespaceSelector": {
            "matchExpressions": [
                {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": list(team.namespaces)}
            ]
        },
        "queueingStrategy": config.queueing_strategy,
        "preemption": {
            "withinClusterQueue": p.within_cluster_queue,
            "reclaimWithinCohort": p.reclaim_within_cohort,
            "borrowWithinCohort": borrow,
        },
        # Borrow before preempting, and try the next flavor (spot after on-demand, say)
        # before preempting anyone.
        "flavorFungibility": {"whenCanBorrow": "MayStopSearch", "whenCanPreempt": "TryNextFlavor"},
        "resourceGroups": [
            {"coveredResources": list(config.covered_resources), "flavors": flavors}
        ],
    }
    if config.provisioning is not None:
        scaled = [
            flavor_name(g, c) for g in config.gpu_types for c in config.capacity_types if c.scales
        ]
        spec["admissionChecksStrategy"] = {
            "admissionChecks": [{"name": config.provisioning.name, "onFlavors": scaled}]
        }
    return _object("ClusterQueue", queue_name(team.name), spec)


def render_priorities(config: QueueConfig) -> list[Obj]:
    out = []
    for p in config.priorities:
        obj: Obj = {
            "apiVersion": KUEUE_API,
            "kind": "WorkloadPriorityClass",
            "metadata": {"name": p.name},
            "value": p.value,
        }
        if p.description:
            obj["description"] = p.description
        out.append(obj)
    return out


def render_local_queues(team: Team) -> list[Obj]:
    return [
        {
            "apiVersion": KUEUE_API,
            "kind": "LocalQueue",
            "metadata": {"name": queue_name(team.name), "namespace": ns},
            "spec": {"clusterQueue": queue_name(team.name)},
        }
        for ns in team.namespaces
    ]


def render_provisioning(provisioning: Provisioning) -> list[Obj]:
    return [
        _object(
            "ProvisioningRequestConfig",
            provisioning.name,
            {
                "provisioningClassName": provisioning.class_name,
                "managedResources": list(provisioning.managed_resources),
                "retryStrategy": {
                    "backoffLimitCount": provisioning.retry_limit,
                    "backoffBaseSeconds": provisioning.retry_base_seconds,
                    "backoffMaxSeconds": provisioning.retry_max_seconds,
                },
            },
        ),
        _object(
            "AdmissionCheck",
            provisioning.name,
            {
                "controllerName": "kueue.x-k8s.io/provisioning-request",
                "parameters": {
                    "apiGroup": "kueue.x-k8s.io",
                    "kind": "ProvisioningRequestConfig",
                    "name": provisioning.name,
                },
            },
        ),
    ]


def render_queues(config: QueueConfig) -> list[Obj]:
    """Every Kueue object of ``config``, in an order ``kubectl apply`` accepts. Raises
    ``DefinitionError`` listing every problem when the configuration is wrong."""
    problems = config.problems()
    if problems:
        raise DefinitionError(
            "the queue configuration is not valid:\n  - " + "\n  - ".join(problems)
        )
    out = render_flavors(config) + render_priorities(config)
    if config.provisioning is not None:
        out += render_provisioning(config.provisioning)
    out += [render_cluster_queue(t, config) for t in config.teams]
    for team in config.teams:
        out += render_local_queues(team)
    return out


def _object(kind: str, name: str, spec: Obj) -> Obj:
    return {"apiVersion": KUEUE_API, "kind": kind, "metadata": {"name": name}, "spec": spec}


# -- configuration from plain data (a YAML file, the chart's values) ----------------------------


def config_from_values(values: Mapping[str, Any]) -> QueueConfig:
    """A ``QueueConfig`` from the chart's ``kueue.teamQueues`` values shape (camelCase keys, as in
    ``values.yaml``); the same shape is the file ``usina k8s queues render`` reads. Raises
    ``DefinitionError`` naming the key that is wrong."""
    try:
        return _config_from_values(values)
    except (KeyError, TypeError, ValueError) as exc:
        raise DefinitionError(
            f"the queue configuration is not valid: {exc!s}; see the kueue.teamQueues section of "
            "deploy/helm/usina/values.yaml for its shape"
        ) from exc


def _config_from_values(values: Mapping[str, Any]) -> QueueConfig:
    known = {
        "enabled", "cohort", "gpuLabel", "capacityLabel", "coveredResources", "gpuTypes",
        "capacityTypes", "priorities", "preemption", "queueingStrategy", "provisioning", "teams",
    }  # fmt: skip
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown keys {unknown}; known: {sorted(known)}")
    defaults = QueueConfig(teams=(), gpu_types=())
    pre = dict(values.get("preemption") or {})
    borrow = dict(pre.get("borrowWithinCohort") or {})
    threshold = borrow.get("maxPriorityThreshold", Preemption().borrow_max_priority)
    prov = dict(values.get("provisioning") or {})
    provisioning = None
    if prov.get("enabled"):
        retry = dict(prov.get("retryStrategy") or {})
        base = Provisioning()
        provisioning = Provisioning(
            name=str(prov.get("name") or base.name),
            class_name=str(prov.get("provisioningClassName") or base.class_name),
            managed_resources=tuple(prov.get("managedResources") or base.managed_resources),
            retry_limit=int(retry.get("backoffLimitCount", base.retry_limit)),
            retry_base_seconds=int(retry.get("backoffBaseSeconds", base.retry_base_seconds)),
            retry_max_seconds=int(retry.get("backoffMaxSeconds", base.retry_max_seconds)),
        )
    capacity_types = defaults.capacity_types
    if values.get("capacityTypes") is not None:
        capacity_types = tuple(
            CapacityType(
                name=str(c["name"]),
                kind=CapacityKind(c.get("kind", "on-demand")),
                node_label=c.get("nodeLabel"),
                taint=c.get("taint"),
                autoscaled=c.get("autoscaled"),
            )
            for c in values["capacityTypes"]
        )
    priorities = defaults.priorities
    if values.get("priorities") is not None:
        priorities = tuple(
            Priority(str(p["name"]), int(p["value"]), str(p.get("description") or ""))
            for p in values["priorities"]
        )
    return QueueConfig(
        teams=tuple(
            Team(
                name=str(t["name"]),
                namespaces=tuple(str(ns) for ns in t.get("namespaces") or ()),
                quotas={str(f): dict(q) for f, q in (t.get("quotas") or {}).items()},
                borrowing_limit=dict(t.get("borrowingLimit") or {}),
                lending_limit=dict(t.get("lendingLimit") or {}),
            )
            for t in values.get("teams") or ()
        ),
        gpu_types=tuple(
            GpuType(str(g["name"]), str(g["product"])) for g in values.get("gpuTypes") or ()
        ),
        capacity_types=capacity_types,
        cohort=str(values.get("cohort") or defaults.cohort),
        covered_resources=tuple(values.get("coveredResources") or defaults.covered_resources),
        gpu_label=str(values.get("gpuLabel") or defaults.gpu_label),
        capacity_label=str(values.get("capacityLabel") or defaults.capacity_label),
        priorities=priorities,
        preemption=Preemption(
            within_cluster_queue=str(pre.get("withinClusterQueue", "LowerPriority")),
            reclaim_within_cohort=str(pre.get("reclaimWithinCohort", "Any")),
            borrow_within_cohort=str(borrow.get("policy", "LowerPriority")),
            borrow_max_priority=(None if threshold is None else int(threshold)),
        ),
        queueing_strategy=str(values.get("queueingStrategy") or defaults.queueing_strategy),
        provisioning=provisioning,
    )


def gpu_capacity(config: QueueConfig, team: str | None = None) -> dict[str, int]:
    """Nominal GPUs per flavor: of one team, or of the whole cohort (``team=None``)."""
    out: dict[str, int] = {}
    for t in config.teams:
        if team is not None and t.name != team:
            continue
        for flavor, quota in t.quotas.items():
            out[flavor] = out.get(flavor, 0) + int(parse_quantity(quota.get("nvidia.com/gpu", 0)))
    return out
