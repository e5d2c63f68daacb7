"""Where the CLI reads runs from: ONE interface (``RunsSource``) with a local implementation
(the state folder: metadata store, artifact store, backend) and a remote one (a usina server's
REST API). Both answer in the server's JSON shapes, so every command prints its table and its
JSON the same way whichever source it reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from usina.cli import remote
from usina.cli.display import attempt_json, run_json
from usina.engine.policy import advice
from usina.engine.ports import log_key
from usina.engine.records import AttemptState, RunState, step_reasons
from usina.errors import NotFoundError
from usina.i18n import N_, error
from usina.sdk.retry import FailureClass

if TYPE_CHECKING:
    from usina.cli.remote import Remote
    from usina.compose.components import Components
    from usina.compose.settings import Settings
    from usina.engine.records import AttemptRecord, RunRecord

Json = dict[str, Any]
#: Log lines ``runs why`` quotes from each failed attempt.
WHY_TAIL = 15


class RunsSource(Protocol):
    def list_runs(self, *, limit: int, state: str | None, pipeline: str | None) -> list[Json]:
        """Runs, newest first, without their steps."""

    def show(self, run_id: str) -> Json:
        """A run with its ``steps`` and ``attempts``."""

    def logs(self, run_id: str, step: str, attempt: int | None) -> str:
        """A step attempt's output (the latest attempt unless ``attempt`` is given)."""

    def why(self, run_id: str) -> Json:
        """``{run, state, error, failed_attempts: [attempt + log_tail + advice]}``."""

    def close(self) -> None: ...


def _summary(run: Json) -> Json:
    return {k: v for k, v in run.items() if k != "steps"}


class LocalRuns:
    """The runs of the local state folder (``USINA_HOME``, ``USINA_DATABASE_URL``...)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._comps: Components | None = None

    @property
    def comps(self) -> Components:
        """The stores, opened on first use; a read never creates an empty store."""
        if self._comps is None:
            from usina.compose.components import open_stores

            if not self.settings.store_exists():
                from usina.cli.common import existing_settings

                existing_settings()  # raises, naming where it looked
            self._comps = open_stores(self.settings)
        return self._comps

    def close(self) -> None:
        if self._comps is not None:
            self._comps.close()

    def _run(self, run_id: str) -> RunRecord:
        if not self.settings.store_exists():
            from usina.cli.common import existing_settings

            existing_settings(run_id)  # raises, naming where it looked
        try:
            return self.comps.metadata.get_run(run_id)
        except NotFoundError as exc:
            raise error(
                NotFoundError,
                N_("{error} (store: {where})"),
                error=exc,
                where=self.settings.where(),
            ) from exc

    def list_runs(self, *, limit: int, state: str | None, pipeline: str | None) -> list[Json]:
        if not self.settings.store_exists():
            return []
        wanted = RunState(state) if state else None
        runs = self.comps.metadata.list_runs(limit=limit, state=wanted, pipeline=pipeline)
        return [_summary(run_json(r, [])) for r in runs]

    def show(self, run_id: str) -> Json:
        run = self._run(run_id)
        md = self.comps.metadata
        reasons = step_reasons(md.list_events(run_id))
        return run_json(run, md.get_steps(run_id), md.get_attempts(run_id), reasons)

    def _attempt(self, run_id: str, step: str, number: int | None) -> AttemptRecord:
        self._run(run_id)
        md = self.comps.metadata
        attempts = md.get_attempts(run_id, step)
        if not attempts:
            names = [s.node for s in md.get_steps(run_id)]
            if step not in names:
                raise error(
                    NotFoundError,
                    N_("run {run} has no step {step!r}; steps: {steps}"),
                    run=run_id,
                    step=step,
                    steps=", ".join(names),
                )
            raise error(
                NotFoundError,
                N_("step {step!r} of run {run} has not run (cached or pending)"),
                step=step,
                run=run_id,
            )
        chosen = (
            attempts[-1]
            if number is None
            else next((a for a in attempts if a.number == number), None)
        )
        if chosen is None:
            raise error(
                NotFoundError,
                N_("step {step!r} has no attempt {number}; it has {count}"),
                step=step,
                number=number,
                count=len(attempts),
            )
        return chosen

    def logs(self, run_id: str, step: str, attempt: int | None) -> str:
        from usina.compose.components import attempt_logs

        chosen = self._attempt(run_id, step, attempt)
        return attempt_logs(self.comps, chosen.id, chosen.backend)

    def why(self, run_id: str) -> Json:
        from usina.cli.profile_cmds import oom_curves

        record = self._run(run_id)
        md = self.comps.metadata
        report = []
        failed = [a for a in md.get_attempts(run_id) if a.state is AttemptState.FAILED]
        curves = oom_curves(self.comps.artifacts, failed)  # an OOM's memory, its last minutes
        for a in failed:
            raw = self.comps.artifacts.read_record(log_key(a.id))
            tail = (raw.decode(errors="replace") if raw else "").splitlines()[-WHY_TAIL:]
            klass = a.failure_class or FailureClass.USER_ERROR
            report.append(
                {
                    **attempt_json(a),
                    "log_tail": tail,
                    "advice": advice(klass, run_id),
                    "memory_curve": curves.get(a.id, []),
                }
            )
        return {
            "run": record.id,
            "state": record.state.value,
            "error": record.error,
            "failed_attempts": report,
        }


class RemoteRuns:
    """The runs of a usina server (``--server URL``)."""

    def __init__(self, server: Remote) -> None:
        self.server = server

    def close(self) -> None:
        pass

    def list_runs(self, *, limit: int, state: str | None, pipeline: str | None) -> list[Json]:
        return remote.list_runs(self.server, limit=limit, state=state, pipeline=pipeline)

    def show(self, run_id: str) -> Json:
        shown = remote.show(self.server, run_id)
        quoted = quote(run_id)
        reasons = step_reasons(self.server.call("GET", f"/api/v1/runs/{quoted}/events"))
        for step in shown.get("steps", []):
            if not step.get("cached"):
                step["why"] = reasons.get(step["node"])
        return shown

    def logs(self, run_id: str, step: str, attempt: int | None) -> str:
        return remote.logs(self.server, run_id, step, attempt)

    def why(self, run_id: str) -> Json:
        shown = self.show(run_id)
        report = []
        for item in shown["attempts"]:
            if item["state"] != "failed":
                continue
            text = self.logs(run_id, item["node"], item["number"])
            report.append({**item, "log_tail": text.splitlines()[-WHY_TAIL:]})
        return {
            "run": run_id,
            "state": shown["state"],
            "error": shown["error"],
            "failed_attempts": report,
        }


def runs_source() -> RunsSource:
    """The remote source with ``--server``, else the local one."""
    from usina.cli.common import server, settings

    remote_server = server()
    if remote_server is not None:
        return RemoteRuns(remote_server)
    return LocalRuns(settings())
