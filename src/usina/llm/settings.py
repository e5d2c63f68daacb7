"""Settings of the LLM server: one frozen dataclass, read once at the CLI edge."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """Continuous batching: how many sequences run together and how much may wait."""

    max_num_seqs: int = 32
    """Sequences decoded together in one step (the running batch). Each holds its KV cache."""
    max_queued_tokens: int = 32_768
    """Prompt tokens allowed to wait for a slot; a request past it gets 429 with Retry-After
    instead of growing the queue without bound."""
    max_prefill_tokens: int = 2048
    """Prompt tokens prefilled in one step; bigger arrivals wait a step, so running streams
    never stall behind a burst of long prompts (one prompt longer than this runs alone)."""
    max_model_len: int | None = None
    """Longest prompt + completion, tokens; default: the model's max_position_embeddings."""
    default_max_tokens: int = 128
    """Completion length when a request gives no max_tokens."""
    retry_after_s: int = 1
    """Seconds suggested in Retry-After on a 429."""


@dataclass(frozen=True, slots=True)
class LLMSettings:
    """Everything one LLM server needs."""

    model_uri: str
    """``models:/name@alias``, ``models:/name/version``, an MLflow model dir or a checkpoint dir."""
    name: str | None = None
    """Model id in ``/v1/models`` and in requests; default: the registered or folder name."""
    host: str = "0.0.0.0"
    port: int = 8080
    scheduler: SchedulerSettings = SchedulerSettings()
    api_key: str | None = None
    """When set, every /v1 route needs ``Authorization: Bearer <api_key>`` (the OpenAI
    clients' convention); /health, /ready and /metrics stay open like the probes."""
    torch_threads: int = 1
    """Intra-op threads of the model (1 keeps a shared CPU machine responsive)."""
    tracking_uri: str | None = None
    """MLflow tracking/registry URI; None lets mlflow use MLFLOW_TRACKING_URI."""
    poll_interval_s: float = 30.0
    """How often a ``models:/NAME@ALIAS`` URI is re-resolved (0: never). When the alias moves,
    the new version is loaded beside the old one, new requests go to it, and the old one
    finishes the sequences it holds before it is released."""
    drain_timeout_s: float = 300.0
    """Longest wait for the old version's sequences after a switch; the rest are cancelled."""
    log_level: str = "info"
