"""``KubernetesSettings``: how the Kubernetes backend turns attempts into Jobs and watches them.

Every field has a default that works on a plain cluster; the CLI and server fill them from flags
and config files. Durations are in seconds, sizes are Kubernetes quantities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usina.backends.kubernetes import validation as v

if TYPE_CHECKING:
    from collections.abc import Mapping

#: The toleration GPU nodes usually carry (NVIDIA GPU operator / cloud GPU node pools).
GPU_TOLERATION: Mapping[str, Any] = {
    "key": "nvidia.com/gpu",
    "operator": "Exists",
    "effect": "NoSchedule",
}

#: Label prefix of everything usina puts on a Job or pod.
LABEL_PREFIX = "usina.dev/"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "usina"
#: The selector of the backend's one list+watch per namespace.
SELECTOR = f"{MANAGED_BY}={MANAGED_BY_VALUE}"
ATTEMPT_ANNOTATION = LABEL_PREFIX + "attempt-id"
RUN_ANNOTATION = LABEL_PREFIX + "run-id"
QUEUE_TIMEOUT_ANNOTATION = LABEL_PREFIX + "queue-timeout"
#: The step's timeout in seconds, counted by the backend from the container's start.
TIMEOUT_ANNOTATION = LABEL_PREFIX + "timeout"
CONTAINER = "main"


@dataclass(frozen=True, slots=True)
class KubernetesSettings:
    """Where and how attempts run as ``batch/v1`` Jobs.

    namespace: namespace of every Job and pod; one list+watch runs per namespace.
        Default ``"default"``.
    image: container image that has usina and the pipeline's code installed. Required unless
        the step's node names its own ``image``. Default ``None``.
    queue: Kueue ``LocalQueue`` name; when set, Jobs carry ``kueue.x-k8s.io/queue-name`` and
        Kueue admits them against the team's quota. Default ``None`` (no Kueue).
    workload_priority_class: Kueue ``WorkloadPriorityClass`` (label
        ``kueue.x-k8s.io/priority-class``), only with ``queue``. Default ``None``.
    gpu_label: node label whose value is the GPU product; a step's ``gpu_type`` becomes a
        required node affinity on it. Default ``"nvidia.com/gpu.product"`` (GPU feature discovery).
    gpu_tolerations: tolerations added to pods that request GPUs, for tainted GPU node pools.
        Default: tolerate ``nvidia.com/gpu`` with effect ``NoSchedule``.
    tolerations: tolerations added to every pod. Default none.
    node_loss_seconds: how long a pod stays bound to a ``not-ready``/``unreachable`` node before
        it is evicted (Kubernetes' default is 300 s; a training step should learn sooner that its
        node is gone). ``None`` keeps the cluster default. Default 60.
    service_account: service account of the pods. Default ``None`` (the namespace default).
    automount_service_account_token: mount an API token in the pod; steps do not talk to the
        Kubernetes API, so off by default.
    priority_class: pod ``priorityClassName`` (scheduler preemption order). Default ``None``.
    image_pull_policy: ``IfNotPresent``, ``Always`` or ``Never``. Default ``None`` (cluster
        default: ``Always`` for ``:latest``, else ``IfNotPresent``).
    image_pull_secrets: names of secrets used to pull ``image``. Default none.
    run_as_user: UID the container runs as; the pod has ``runAsNonRoot: true`` either way, so an
        image whose user is root fails with ``CreateContainerConfigError`` unless this is set.
        Default 1000. ``None`` leaves the image's user.
    env: environment variables added to every step container. Default none.
    secret_env: environment variables read from Secrets: ``NAME -> "secret/key"``
        (``valueFrom.secretKeyRef``), so credentials never appear in a manifest. Default none.
    env_from_secrets / env_from_config_maps: Secrets / ConfigMaps whose every key becomes an
        environment variable (``envFrom``), e.g. the object store's credentials. Default none.
    node_selector: node labels every pod must match (``nodeSelector``). Default none.
    backoff_limit: failed pods the Job controller retries by itself before the Job fails.
        The engine owns retries (each retry is a new Job, possibly with more memory), so the
        default is 0.
    disruption_action: ``podFailurePolicy`` action for pods with a ``DisruptionTarget``
        condition (preemption, eviction, node loss). ``"Ignore"`` (default, DESIGN.md): the Job
        controller replaces the pod at once, not counted, bounded by ``activeDeadlineSeconds``;
        the backend still reports the disruption as evidence. ``"FailJob"``: the Job fails and
        the engine starts a new attempt, classified ``preempted``/``node_lost`` (charged to
        ``Retry.max_disruptions``, never to the user's budget).
    default_deadline: ``activeDeadlineSeconds`` for steps without a timeout; it bounds
        ``Ignore`` loops. Counts from the Job's start, including time spent pending.
        Default 7 days. A step with a timeout is timed by the backend from its container's
        start; its Job's ``activeDeadlineSeconds`` is only a backstop (timeout + queue_timeout
        + ``deadline_margin``).
    deadline_margin: seconds added to that backstop for image pulls and start-up. Default 600.
    ttl_seconds: ``ttlSecondsAfterFinished``: a finished Job and its pods are deleted this long
        after they end (their logs were copied before). Default 3600.
    queue_timeout: seconds a pod may stay ``Unschedulable`` before the attempt fails as
        ``unschedulable`` (the message names the resource no node has). A step may override it
        with ``queue_timeout`` in its node. Default 600.
    termination_grace_seconds: time a step gets between SIGTERM and SIGKILL (checkpointing on
        preemption). Default 60.
    default_shm: size of the memory-backed ``/dev/shm`` given to GPU steps that set no ``shm``
        (data loaders and NCCL need more than the runtime's 64 MiB). It counts against the memory
        limit. Default ``"1Gi"``.
    log_sync_seconds: while a pod runs, its log is copied to the artifact store this often;
        it is always copied when the pod ends. ``None`` copies only at the end. Default 30.
    log_tail_lines: log lines quoted as evidence in a failed attempt's message. Default 20.
    log_max_bytes: largest log copied per attempt (the tail is kept). Default 8 MiB.
    watch_timeout: seconds the API server keeps one watch open before the backend re-opens it
        from its last resourceVersion. Default 300.
    list_page_size: items per page when the backend (re)lists. Default 500.
    backoff_base / backoff_max: exponential backoff with full jitter after 429, 5xx and dropped
        connections, in seconds. Defaults 0.2 and 30.
    request_timeout: connect/read timeout of ordinary API calls, in seconds. Default 30.
    sync_timeout: how long ``observe`` waits for the first list to finish before it answers.
        Default 30.
    launch_workers: threads that create the Jobs ``launch`` hands them (a create is an API round
        trip, retried on 429/5xx; done in the engine's pass it made the pass wait on the API
        server, ~10 ms per Job). ``0`` creates them inside ``launch``. Default 4.
    """

    namespace: str = "default"
    image: str | None = None
    queue: str | None = None
    workload_priority_class: str | None = None
    gpu_label: str = "nvidia.com/gpu.product"
    gpu_tolerations: tuple[Mapping[str, Any], ...] = (GPU_TOLERATION,)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    node_loss_seconds: int | None = 60
    service_account: str | None = None
    automount_service_account_token: bool = False
    priority_class: str | None = None
    image_pull_policy: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    run_as_user: int | None = 1000
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)
    env_from_secrets: tuple[str, ...] = ()
    env_from_config_maps: tuple[str, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    backoff_limit: int = 0
    disruption_action: str = "Ignore"
    default_deadline: int = 7 * 24 * 3600
    deadline_margin: int = 600
    ttl_seconds: int = 3600
    queue_timeout: float = 600.0
    termination_grace_seconds: int = 60
    default_shm: str = "1Gi"
    log_sync_seconds: float | None = 30.0
    log_tail_lines: int = 20
    log_max_bytes: int = 8 * 2**20
    watch_timeout: int = 300
    list_page_size: int = 500
    backoff_base: float = 0.2
    backoff_max: float = 30.0
    request_timeout: float = 30.0
    sync_timeout: float = 30.0
    launch_workers: int = 4

    def problems(self) -> list[str]:
        """What is wrong with these settings, in words an operator can act on."""
        found: list[str] = []
        if self.disruption_action not in ("Ignore", "FailJob"):
            found.append(
                f"disruption_action={self.disruption_action!r} must be 'Ignore' or 'FailJob'"
            )
        if self.image_pull_policy not in (None, "Always", "IfNotPresent", "Never"):
            found.append(
                f"image_pull_policy={self.image_pull_policy!r} must be Always, IfNotPresent "
                "or Never"
            )
        for name in ("backoff_limit", "default_deadline", "ttl_seconds", "launch_workers"):
            if getattr(self, name) < 0:
                found.append(f"{name} must be >= 0")
        if self.default_deadline < 1:
            found.append("default_deadline must be at least 1 second")
        if self.workload_priority_class and not self.queue:
            found.append("workload_priority_class needs a Kueue queue; set queue too")
        return found + self.name_problems()

    def name_problems(self) -> list[str]:
        """Values that break Kubernetes' naming rules (``validation``), named with the rule."""
        found = v.dns1123_label("namespace", self.namespace)
        if self.image is not None:
            found += v.image_reference("image", self.image)
        if self.queue is not None:
            found += v.dns1123_subdomain("queue", self.queue)
            found += v.label_value("queue", self.queue)
        for name, value in (
            ("workload_priority_class", self.workload_priority_class),
            ("service_account", self.service_account),
            ("priority_class", self.priority_class),
        ):
            if value is not None:
                found += v.dns1123_subdomain(name, value)
        found += v.each(v.dns1123_subdomain, "image_pull_secret", self.image_pull_secrets)
        found += v.each(v.dns1123_subdomain, "env_from_secret", self.env_from_secrets)
        found += v.each(v.dns1123_subdomain, "env_from_config_map", self.env_from_config_maps)
        found += v.each(v.env_name, "env", [*self.env, *self.secret_env])
        for name, ref in self.secret_env.items():
            secret, slash, key = ref.partition("/")
            if not slash or not key:
                found.append(f"secret_env {name}={ref!r} must be SECRET/KEY")
            else:
                found += v.dns1123_subdomain(f"secret_env {name} secret", secret)
        for key, value in self.node_selector.items():
            found += v.label_key("node_selector", key)
            found += v.label_value(f"node_selector {key}", value)
        return found
