"""The API's request and response bodies (pydantic, at the I/O edge only), and the
conversions from the engine's records."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from usina.engine.policy import advice
from usina.engine.records import (
    ArtifactRef,
    AttemptRecord,
    AttemptState,
    Event,
    RunRecord,
    StepRecord,
)
from usina.sdk.retry import FailureClass

if TYPE_CHECKING:
    from usina.stores.platform import AuditEntry, RunRow, TokenInfo

RunStateName = Literal["pending", "running", "succeeded", "failed", "cancelled"]
RoleName = Literal["viewer", "editor", "admin"]
Metric = float | str  # non-finite values ("nan", "inf", "-inf") as strings: JSON has none


class Problem(BaseModel):
    detail: str


class ArtifactOut(BaseModel):
    digest: str
    serializer: str
    type_name: str
    size: int


class RunSummary(BaseModel):
    id: str
    pipeline: str
    project: str
    state: RunStateName
    params: dict[str, Any]
    labels: dict[str, str]
    created_at: float
    started_at: float | None
    finished_at: float | None
    duration: float | None
    cancel_requested: bool
    error: str | None
    step_states: dict[str, int] = Field(description="how many steps are in each state")


class RunPage(BaseModel):
    items: list[RunSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


class StepOut(BaseModel):
    node: str
    step: str
    state: str
    cached: bool
    attempts: int
    upstream: list[str]
    started_at: float | None
    finished_at: float | None
    duration: float | None
    error: str | None
    metrics: dict[str, Metric]
    outputs: list[ArtifactOut]
    resources: dict[str, Any]
    why: str | None = Field(default=None, description="why the step ran instead of the cache")


class AttemptOut(BaseModel):
    id: str
    node: str
    number: int
    state: Literal["running", "succeeded", "failed"]
    failure_class: str | None
    exit_code: int | None
    reason: str | None
    message: str | None = Field(description="the evidence: traceback, kill reason")
    advice: str | None = Field(description="what to do about a failure")
    started_at: float
    finished_at: float | None
    resources: dict[str, Any]
    gpu_seconds: float
    backend: str


class RunDetail(RunSummary):
    steps: list[StepOut]


class EventOut(BaseModel):
    at: float
    kind: str
    node: str | None
    attempt: str | None
    message: str


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipeline: str = Field(
        min_length=1,
        max_length=200,
        description="a pipeline this server has, or the name of the bundle's pipeline",
    )
    params: dict[str, Any] = Field(default_factory=dict)
    project: str = Field(default="default", min_length=1, max_length=200, pattern=r"^[^*]+$")
    labels: dict[str, str] = Field(default_factory=dict)
    bundle: str | None = Field(
        default=None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="a code bundle uploaded to PUT /bundles/{digest}: run its pipeline",
    )
    file: str | None = Field(
        default=None,
        min_length=4,
        max_length=1000,
        description="with bundle: FILE.py[:ATTR], the pipeline's file relative to the bundle",
    )


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rerun: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="steps to run again with everything downstream of them, even if unchanged",
    )


class ParamOut(BaseModel):
    name: str
    type: str
    default: Any
    required: bool


class PipelineOut(BaseModel):
    name: str
    file: str
    params: list[ParamOut]
    steps: list[str]


class LineageProducer(BaseModel):
    run_id: str
    node: str
    output: int


class LineageConsumer(BaseModel):
    node: str
    input: str
    key: int | str | None = Field(
        default=None,
        description="for a fan-in input (a list or dict of outputs): the artifact's position "
        "in the list or its key in the dict; null for a plain input",
    )


class LineageItem(BaseModel):
    artifact: ArtifactOut
    producer: LineageProducer
    consumers: list[LineageConsumer]
    stored: bool


class MetricPoint(BaseModel):
    run_id: str
    created_at: float
    step: str
    metrics: dict[str, Metric]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    project: str = Field(min_length=1, max_length=200)
    role: RoleName
    expires: str | None = Field(
        default=None,
        max_length=20,
        description="lifetime: 30d, 12h, 2w or 'never'; default: the server's "
        "(GuardSettings.token_default_days)",
    )


class TokenOut(BaseModel):
    id: str
    name: str
    created_at: float
    created_by: str
    revoked_at: float | None
    roles: dict[str, str]
    expires_at: float | None = Field(
        default=None, description="when it stops working (seconds since the epoch); None: never"
    )


class TokenCreated(TokenOut):
    token: str = Field(description="shown once; only its hash is stored")


class Me(BaseModel):
    token_id: str
    name: str
    roles: dict[str, str]


class AuditOut(BaseModel):
    seq: int
    at: float
    actor: str
    action: str
    project: str | None
    target: str | None
    outcome: str
    detail: dict[str, Any]


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(default="default", min_length=1, max_length=200, pattern=r"^[^*]+$")
    url: str = Field(pattern=r"^https?://[A-Za-z0-9._~:/?#@!$&'()*+,;=%\[\]-]+$", max_length=2000)


class EndpointOut(BaseModel):
    name: str
    project: str
    url: str
    ready: bool | None = Field(
        description="GET <url>/v2/health/ready answered 200; None: not checked"
    )
    detail: str | None


class ModelVersionOut(BaseModel):
    version: str
    run_id: str | None
    source: str | None
    status: str | None
    created_at: float | None
    aliases: list[str]
    usina_run_id: str | None = Field(
        default=None, description="the usina run that registered it (tag usina.run_id)"
    )
    usina_step: str | None = Field(
        default=None, description="the step of that run (tag usina.step)"
    )


class ModelOut(BaseModel):
    name: str
    description: str | None
    aliases: dict[str, str]
    versions: list[ModelVersionOut]


class AliasRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=50, pattern=r"^[0-9]+$")


# -- conversions ---------------------------------------------------------------------------


def metric(value: float) -> Metric:
    return value if math.isfinite(value) else str(value)


def _duration(start: float | None, end: float | None) -> float | None:
    if start is None:
        return None
    return max(0.0, (end or time.time()) - start)


def artifact_out(ref: ArtifactRef) -> ArtifactOut:
    return ArtifactOut(
        digest=ref.digest, serializer=ref.serializer, type_name=ref.type_name, size=ref.size
    )


def summary_from_row(row: RunRow) -> RunSummary:
    return RunSummary(
        id=row.id,
        pipeline=row.pipeline,
        project=row.project,
        state=row.state.value,
        params=row.params,
        labels=row.labels,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration=_duration(row.started_at, row.finished_at),
        cancel_requested=row.cancel_requested,
        error=row.error,
        step_states=row.step_states,
    )


def ordered_steps(run: RunRecord, steps: list[StepRecord]) -> list[StepRecord]:
    index = {node["id"]: i for i, node in enumerate(run.plan.get("nodes", []))}
    return sorted(steps, key=lambda s: index.get(s.node, len(index)))


def run_detail(
    run: RunRecord, steps: list[StepRecord], reasons: dict[str, str] | None = None
) -> RunDetail:
    nodes = {n["id"]: n for n in run.plan.get("nodes", [])}
    counts: dict[str, int] = {}
    for s in steps:
        counts[s.state.value] = counts.get(s.state.value, 0) + 1
    return RunDetail(
        id=run.id,
        pipeline=run.pipeline,
        project=run.project,
        state=run.state.value,
        params=run.params,
        labels=run.labels,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration=_duration(run.started_at, run.finished_at),
        cancel_requested=run.cancel_requested,
        error=run.error,
        step_states=counts,
        steps=[
            StepOut(
                node=s.node,
                step=str(nodes.get(s.node, {}).get("step", s.node)),
                state=("cached" if s.cached else s.state.value),
                cached=s.cached,
                attempts=s.attempts,
                upstream=list(nodes.get(s.node, {}).get("upstream", [])),
                started_at=s.started_at,
                finished_at=s.finished_at,
                duration=None if s.cached else _duration(s.started_at, s.finished_at),
                error=s.error,
                metrics={k: metric(v) for k, v in s.metrics.items()},
                outputs=[artifact_out(o) for o in s.outputs],
                resources=s.resources,
                why=None if s.cached else (reasons or {}).get(s.node),
            )
            for s in ordered_steps(run, steps)
        ],
    )


def attempt_out(a: AttemptRecord) -> AttemptOut:
    failed = a.state is AttemptState.FAILED
    klass = a.failure_class or (FailureClass.USER_ERROR if failed else None)
    return AttemptOut(
        id=a.id,
        node=a.node,
        number=a.number,
        state=a.state.value,
        failure_class=klass.value if klass else None,
        exit_code=a.exit_code,
        reason=a.reason,
        message=a.message,
        advice=advice(klass, a.run_id) if failed and klass else None,
        started_at=a.started_at,
        finished_at=a.finished_at,
        resources=a.resources,
        gpu_seconds=a.gpu_seconds,
        backend=a.backend,
    )


def event_out(e: Event) -> EventOut:
    return EventOut(at=e.at, kind=e.kind, node=e.node, attempt=e.attempt, message=e.message)


def token_out(info: TokenInfo) -> TokenOut:
    return TokenOut(
        id=info.id,
        name=info.name,
        created_at=info.created_at,
        created_by=info.created_by,
        revoked_at=info.revoked_at,
        roles=info.roles,
        expires_at=info.expires_at,
    )


def audit_out(e: AuditEntry) -> AuditOut:
    return AuditOut(
        seq=e.seq,
        at=e.at,
        actor=e.actor,
        action=e.action,
        project=e.project,
        target=e.target,
        outcome=e.outcome,
        detail=e.detail,
    )
