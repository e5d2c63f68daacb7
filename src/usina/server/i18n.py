"""The web UI's words, from usina's one message catalogue (``usina.i18n``: the English text is
the message id, the pt-BR translation is in its ``.po``), and how a request picks a language:
``?lang=`` (the toggle, remembered in a cookie), then the cookie, then ``Accept-Language``.

Templates read a word as ``t.runs``, an event's kind as ``t['event.' ~ e.kind]`` (the kind itself
in English); ``ui`` puts a failed attempt's advice in the page's language."""

from __future__ import annotations

from usina.i18n import EVENT_KINDS, LANGS, N_, event_name, translate

__all__ = ["COOKIE", "LANGS", "MESSAGES", "WORDS", "negotiate", "translator"]

COOKIE = "usina_lang"

#: The UI's words: key (what templates write) -> English text (the catalogue's message id).
WORDS: dict[str, str] = {
    "runs": N_("Runs"),
    "run": N_("Run"),
    "models": N_("Models"),
    "endpoints": N_("Endpoints"),
    "metrics": N_("Metrics"),
    "pipeline": N_("Pipeline"),
    "project": N_("Project"),
    "state": N_("State"),
    "created": N_("Created"),
    "duration": N_("Duration"),
    "steps": N_("Steps"),
    "step": N_("Step"),
    "attempt": N_("Attempt"),
    "attempts": N_("Attempts"),
    "failure_class": N_("Failure class"),
    "exit_code": N_("Exit code"),
    "reason": N_("Reason"),
    "evidence": N_("Evidence"),
    "advice": N_("What to do"),
    "log": N_("Log"),
    "no_log": N_("(no output)"),
    "params": N_("Parameters"),
    "error": N_("Error"),
    "next_page": N_("Older runs"),
    "all": N_("all"),
    "filter": N_("Filter"),
    "no_runs": N_("No runs yet."),
    "dag": N_("Graph"),
    "events": N_("Events"),
    "value": N_("Value"),
    "metric": N_("Metric"),
    "no_metrics": N_("No metrics logged."),
    "version": N_("Version"),
    "versions": N_("Versions"),
    "aliases": N_("Aliases"),
    "source": N_("Source"),
    "status": N_("Status"),
    "no_models": N_("No registered models."),
    "no_registry": N_("This server has no model registry (start it with --registry-uri)."),
    "url": N_("URL"),
    "ready": N_("ready"),
    "not_ready": N_("not ready"),
    "no_endpoints": N_("No serving endpoints registered."),
    "login": N_("Sign in"),
    "logout": N_("Sign out"),
    "token": N_("API token"),
    "token_help": N_("Create one with: usina token create --project P --role viewer"),
    "bad_token": N_("That token is unknown or revoked."),
    "live": N_("live"),
    "metrics_over_time": N_("Metrics over time"),
    "cached": N_("cached"),
    "state.pending": N_("pending"),
    "state.backoff": N_("waiting to retry"),
    "state.running": N_("running"),
    "state.succeeded": N_("succeeded"),
    "state.failed": N_("failed"),
    "state.skipped": N_("skipped"),
    "state.cancelled": N_("cancelled"),
    "state.cached": N_("cached"),
    "step_failed": N_("Step {step} failed"),
    "attempt_details": N_("Attempt details"),
    "full_log": N_("Full log"),
    "made_by": N_("Made by (run · step)"),
    "compare": N_("Compare runs"),
    "cancel": N_("Cancel"),
    "resume": N_("Resume"),
    "rerun": N_("Run again"),
    "new_run": N_("New run"),
    "submit": N_("Submit"),
    "required": N_("required"),
    "promote": N_("Make champion"),
    "schedules": N_("Schedules"),
    "schedule": N_("Schedule"),
    "no_schedules": N_("No schedules yet (usina schedules create)."),
    "cron": N_("Cron"),
    "next_tick": N_("Next tick"),
    "last_tick": N_("Last tick"),
    "paused": N_("paused"),
    "active": N_("active"),
    "pause": N_("Pause"),
    "runs_oldest_first": N_("runs, oldest → newest"),
    "register_endpoint": N_("Register an endpoint"),
    "register_endpoint_help": N_(
        "An admin token registers a serving endpoint (usina serve, or any server answering "
        "GET /v2/health/ready) under a name; this page then checks it:"
    ),
    "csrf_refused": N_(
        "This form has expired or did not come from this site; reload the page and try again."
    ),
}

#: The toggle names the other language in that language: not a translation of one text.
_TOGGLE = {"en": "Idioma: Português", "pt-BR": "Language: English"}


def _words(lang: str) -> dict[str, str]:
    table = {key: translate(text, lang) for key, text in WORDS.items()}
    table.update({f"event.{kind}": event_name(kind, lang) for kind in EVENT_KINDS})
    table["language"] = _TOGGLE[lang]
    return table


#: Every language's words, read from the catalogue once.
MESSAGES: dict[str, dict[str, str]] = {lang: _words(lang) for lang in LANGS}


def negotiate(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The language for a request: an explicit choice first, then the browser's."""
    for explicit in (query, cookie):
        if explicit in LANGS:
            return explicit
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        ranked.append((-q, i, tag.strip().lower()))
    for _q, _i, tag in sorted(ranked):
        if tag.startswith("pt"):
            return "pt-BR"
        if tag.startswith("en"):
            return "en"
    return "en"


def translator(lang: str) -> dict[str, str]:
    return MESSAGES.get(lang, MESSAGES["en"])
