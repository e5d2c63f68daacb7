"""The web UI's words in English and Brazilian Portuguese, and how a request picks one:
``?lang=`` (the toggle, remembered in a cookie), then the cookie, then ``Accept-Language``."""

from __future__ import annotations

LANGS = ("en", "pt-BR")
COOKIE = "usina_lang"

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "runs": "Runs",
        "run": "Run",
        "models": "Models",
        "endpoints": "Endpoints",
        "metrics": "Metrics",
        "pipeline": "Pipeline",
        "project": "Project",
        "state": "State",
        "created": "Created",
        "duration": "Duration",
        "steps": "Steps",
        "step": "Step",
        "attempt": "Attempt",
        "attempts": "Attempts",
        "failure_class": "Failure class",
        "exit_code": "Exit code",
        "reason": "Reason",
        "evidence": "Evidence",
        "advice": "What to do",
        "log": "Log",
        "no_log": "(no output)",
        "params": "Parameters",
        "error": "Error",
        "next_page": "Older runs",
        "all": "all",
        "filter": "Filter",
        "no_runs": "No runs yet.",
        "dag": "Graph",
        "events": "Events",
        "value": "Value",
        "metric": "Metric",
        "no_metrics": "No metrics logged.",
        "version": "Version",
        "versions": "Versions",
        "aliases": "Aliases",
        "source": "Source",
        "status": "Status",
        "no_models": "No registered models.",
        "no_registry": "This server has no model registry (start it with --registry-uri).",
        "url": "URL",
        "ready": "ready",
        "not_ready": "not ready",
        "no_endpoints": "No serving endpoints registered.",
        "login": "Sign in",
        "logout": "Sign out",
        "token": "API token",
        "token_help": "Create one with: usina token create --project P --role viewer",
        "bad_token": "That token is unknown or revoked.",
        "language": "Idioma: Português",
        "live": "live",
        "metrics_over_time": "Metrics over time",
        "cached": "cached",
        "state.pending": "pending",
        "state.backoff": "waiting to retry",
        "state.running": "running",
        "state.succeeded": "succeeded",
        "state.failed": "failed",
        "state.skipped": "skipped",
        "state.cancelled": "cancelled",
        "state.cached": "cached",
        "step_failed": "Step {step} failed",
        "attempt_details": "Attempt details",
        "full_log": "Full log",
        "made_by": "Made by (run · step)",
        "compare": "Compare runs",
        "cancel": "Cancel",
        "resume": "Resume",
        "rerun": "Run again",
        "new_run": "New run",
        "submit": "Submit",
        "required": "required",
        "promote": "Make champion",
        "schedules": "Schedules",
        "schedule": "Schedule",
        "no_schedules": "No schedules yet (usina schedules create).",
        "cron": "Cron",
        "next_tick": "Next tick",
        "last_tick": "Last tick",
        "paused": "paused",
        "active": "active",
        "pause": "Pause",
        "runs_oldest_first": "runs, oldest → newest",
        "register_endpoint": "Register an endpoint",
        "register_endpoint_help": "An admin token registers a serving endpoint (usina serve, or "
        "any server answering GET /v2/health/ready) under a name; this page then checks it:",
        "csrf_refused": "This form has expired or did not come from this site; reload the "
        "page and try again.",
    },
    "pt-BR": {
        "runs": "Execuções",
        "run": "Execução",
        "models": "Modelos",
        "endpoints": "Endpoints",
        "metrics": "Métricas",
        "pipeline": "Pipeline",
        "project": "Projeto",
        "state": "Estado",
        "created": "Criada em",
        "duration": "Duração",
        "steps": "Etapas",
        "step": "Etapa",
        "attempt": "Tentativa",
        "attempts": "Tentativas",
        "failure_class": "Classe de falha",
        "exit_code": "Código de saída",
        "reason": "Motivo",
        "evidence": "Evidência",
        "advice": "O que fazer",
        "log": "Log",
        "no_log": "(sem saída)",
        "params": "Parâmetros",
        "error": "Erro",
        "next_page": "Execuções anteriores",
        "all": "todos",
        "filter": "Filtrar",
        "no_runs": "Nenhuma execução ainda.",
        "dag": "Grafo",
        "events": "Eventos",
        "value": "Valor",
        "metric": "Métrica",
        "no_metrics": "Nenhuma métrica registrada.",
        "version": "Versão",
        "versions": "Versões",
        "aliases": "Apelidos",
        "source": "Origem",
        "status": "Situação",
        "no_models": "Nenhum modelo registrado.",
        "no_registry": "Este servidor não tem registro de modelos (inicie com --registry-uri).",
        "url": "URL",
        "ready": "pronto",
        "not_ready": "indisponível",
        "no_endpoints": "Nenhum endpoint de serviço registrado.",
        "login": "Entrar",
        "logout": "Sair",
        "token": "Token de API",
        "token_help": "Crie um com: usina token create --project P --role viewer",
        "bad_token": "Token desconhecido ou revogado.",
        "language": "Language: English",
        "live": "ao vivo",
        "metrics_over_time": "Métricas ao longo do tempo",
        "cached": "em cache",
        "state.pending": "pendente",
        "state.backoff": "aguardando nova tentativa",
        "state.running": "executando",
        "state.succeeded": "concluída",
        "state.failed": "falhou",
        "state.skipped": "pulada",
        "state.cancelled": "cancelada",
        "state.cached": "em cache",
        "step_failed": "A etapa {step} falhou",
        "attempt_details": "Detalhes da tentativa",
        "full_log": "Log completo",
        "made_by": "Gerado por (execução · etapa)",
        "compare": "Comparar execuções",
        "cancel": "Cancelar",
        "resume": "Retomar",
        "rerun": "Executar de novo",
        "new_run": "Nova execução",
        "submit": "Enviar",
        "required": "obrigatório",
        "promote": "Tornar campeão",
        "schedules": "Agendamentos",
        "schedule": "Agendamento",
        "no_schedules": "Nenhum agendamento ainda (usina schedules create).",
        "cron": "Cron",
        "next_tick": "Próximo disparo",
        "last_tick": "Último disparo",
        "paused": "pausado",
        "active": "ativo",
        "pause": "Pausar",
        "runs_oldest_first": "execuções, da mais antiga à mais recente",
        "register_endpoint": "Registre um endpoint",
        "register_endpoint_help": "Um token de admin registra um endpoint de serviço (usina "
        "serve, ou qualquer servidor que responda GET /v2/health/ready) com um nome; esta "
        "página passa a verificá-lo:",
        "csrf_refused": "Este formulário expirou ou não veio deste site; recarregue a página "
        "e tente de novo.",
    },
}


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
