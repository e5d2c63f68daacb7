"""Settings of the platform server: nested frozen values, built at the edge (``usina server``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from usina.compose.projects import ProjectBackend
    from usina.server.notify import Webhook


@dataclass(frozen=True, slots=True)
class ReconcilerSettings:
    """How the server drives runs.

    lease_ttl: seconds a replica's claim on a run lasts without renewal (default 15). A replica
        that dies hands its runs to the others after at most this long.
    poll_interval: longest wait between two passes over the held runs, in seconds (default 0.5);
        the local backend wakes the loop earlier when an attempt ends.
    max_runs: runs one replica drives at once (default 16); the rest are left to other replicas
        or to later passes.
    max_parallel: attempts running at once per run (default 4).
    resync_interval: with a backend that reports which runs changed (Kubernetes), a held run
        that nothing reported on is still reconciled about this often, in seconds (default 10):
        the safety net for what no feed reports, e.g. a cancel written through the API (the
        store changed, not the cluster), which waits for it. Each held run costs one pass per
        interval: a replica driving thousands of runs wants a longer one.
    max_claims_per_pass: runs newly claimed in one pass (default 500): a backlog (a restart,
        a burst of submissions) is taken in slices, so the ends of running attempts are
        recorded between them.
    enabled: False serves the API and UI without driving runs (a read-only replica).
    """

    lease_ttl: float = 15.0
    poll_interval: float = 0.5
    max_runs: int = 16
    max_parallel: int = 4
    resync_interval: float = 10.0
    max_claims_per_pass: int = 500
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Where the server keeps state and what it serves.

    database_url: metadata store shared by every replica (``postgresql://...`` in production).
    artifacts_url: artifact store (fsspec URL) shared by every replica.
    attempts_dir: local folder of the attempts this machine runs (logs while running).
    pipelines: ``FILE.py[:NAME]`` targets whose pipelines may be submitted by name.
    registry_uri: MLflow registry for the models pages; None hides them.
    tracking_uri: MLflow tracking URI for runs of pipelines declared ``tracking="mlflow"``
        (default: ``registry_uri``, else SQLite next to the attempts folder).
    reconciler: see ``ReconcilerSettings``.
    backend: where the steps of the server's runs run, by name in the ``usina.backends``
        entry-point group (default ``local``: processes on this machine; ``kubernetes``: Jobs).
    backend_options: that backend's own options (``kubernetes``: ``namespace``, ``queue``,
        ``image``, ``service_account``, ``priority_class``, ``image_pull_secrets``, ``env``,
        ``secret_env``, ``env_from_secrets``, ``node_selector``, ``tolerations``, ``context``).
    projects: per project, its own backend and options (``usina.compose.projects``): e.g. the
        ``risk`` project's steps as Jobs in namespace ``risk-ml`` under Kueue queue ``risk``.
        A project not named here uses ``backend``/``backend_options``.
    """

    database_url: str
    artifacts_url: str
    attempts_dir: str
    pipelines: tuple[str, ...] = ()
    registry_uri: str | None = None
    tracking_uri: str | None = None
    reconciler: ReconcilerSettings = field(default_factory=ReconcilerSettings)
    backend: str = "local"
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    projects: Mapping[str, ProjectBackend] = field(default_factory=dict)
    # Webhooks called when runs finish (``usina.server.notify``), and the server's external
    # URL for the links they carry.
    webhooks: tuple[Webhook, ...] = ()
    external_url: str | None = None

    def mlflow_tracking_uri(self) -> str:
        """Where tracked runs are logged (see ``tracking_uri``)."""
        import os

        from usina.tracking.uri import local_tracking_uri

        if self.tracking_uri:
            return self.tracking_uri
        if self.registry_uri:
            return self.registry_uri
        return local_tracking_uri(os.path.dirname(os.path.abspath(self.attempts_dir)))
