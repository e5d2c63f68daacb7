"""Settings of ``usina serve``: nested frozen dataclasses, read once at the CLI edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from usina.serving.rollout import RolloutPolicy


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """Dynamic batching, per model and per worker process."""

    max_batch_size: int = 64
    """Most rows predicted in one call. Bigger batches amortize per-call overhead."""
    max_wait_ms: float = 2.0
    """Longest a request waits for others to join its batch, in milliseconds. A batch is sent
    earlier as soon as no more requests are arriving, so an idle server adds no delay."""
    max_queue: int = 256
    """Requests allowed to wait per model and worker; past it they get 503 at once instead of
    queueing without bound (admitted latency stays near max_queue / throughput)."""


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything one ``usina serve`` needs; workers receive it pickled."""

    model_uri: str
    """``models:/name@alias`` (followed), ``models:/name/version`` or a local MLflow model path."""
    name: str | None = None
    """Name the model is served under; default: the registered name or the folder's name."""
    host: str = "0.0.0.0"
    http_port: int = 8080
    grpc_port: int | None = 8081
    """None disables gRPC."""
    workers: int = 1
    """Processes sharing the ports through SO_REUSEPORT; each holds the model and batches."""
    batch: BatchSettings = field(default_factory=BatchSettings)
    poll_interval_s: float = 30.0
    """How often an ``@alias`` URI is re-resolved; a moved alias is loaded and switched to."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest REST body or gRPC message accepted."""
    grace_period_s: float = 20.0
    """On SIGTERM: time allowed to answer the requests already accepted before exiting."""
    tracking_uri: str | None = None
    """MLflow tracking/registry URI; None: the one ``usina run`` logs to
    (``usina.tracking.uri.default_tracking_uri``: ``$MLFLOW_TRACKING_URI`` or usina's home)."""
    more_models: tuple[str, ...] = ()
    """Further model URIs served by the same server, each under its own name."""
    rollout: RolloutPolicy | None = None
    """Roll out a challenger beside the (first) model: shadow or canary; None: no rollout."""
    challenger_uri: str | None = None
    """The rollout's challenger; None: ``models:/NAME@challenger`` of the first model."""
    repository_api: bool = False
    """Serve the repository extension: index, and load/unload models at run time."""
    predict_threads: int = 1
    """Threads a native model may use per predict call (1: the workers are the parallelism)."""
    coordination_dir: str | None = None
    """Folder where workers agree on versions (set by the CLI when workers > 1)."""
    metrics_dir: str | None = None
    """Directory for prometheus multiprocess files (set by the CLI when workers > 1)."""
    log_level: str = "info"
