"""usina's one message catalogue: every marked message has its pt-BR translation (with the same
placeholders, compiled into the committed .mo), how a language is chosen, and the translated
advice, events and errors."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Annotated

import pytest
import typer
import typer.main
from babel.messages.catalog import Catalog
from scripts.i18n import LOCALES, check, compiled, extract, mo_path, placeholders, problems, read

from usina import i18n
from usina.cli import help
from usina.engine.policy import advice
from usina.errors import NotFoundError
from usina.sdk.retry import FailureClass

EVENT_KIND = re.compile(r"^(run|step|attempt|notification|cancel)_[a-z]+(_[a-z]+)*$")


@pytest.fixture(autouse=True)
def _english_after() -> object:
    yield
    i18n.set_language("en")


def test_every_marked_message_has_its_translation_and_the_mo_is_compiled() -> None:
    assert problems() == []


def test_the_catalogue_holds_the_cli_advice_event_and_error_messages() -> None:
    ids = {m.id for m in extract()}
    assert "resume the run to continue it" in ids  # engine/policy.py
    assert "run_started" in ids  # usina.i18n.EVENT_KINDS
    assert "error:" in ids  # cli/main.py
    assert len(ids) > 50


def _template(*ids: str) -> Catalog:
    template = Catalog(locale="en")
    for msgid in ids:
        template.add(msgid)
    return template


def test_the_check_names_a_missing_an_empty_a_fuzzy_and_a_wrong_translation() -> None:
    catalog = Catalog(locale="pt_BR")
    catalog.add("run {run} failed", "execução {run} falhou")
    catalog.add("empty", "")
    catalog.add("fuzzy", "confuso", flags=["fuzzy"])
    catalog.add("step {step}", "etapa {etapa}")
    template = _template("run {run} failed", "absent", "empty", "fuzzy", "step {step}")
    found = check(template, catalog, compiled(catalog), "x.po")
    assert found == [
        "x.po: 'absent' is not in the catalogue (run scripts/i18n.py)",
        "x.po: 'empty' has no translation",
        "x.po: 'fuzzy' is marked fuzzy (check it, remove the flag)",
        "x.po: 'step {step}': the translation's placeholders differ",
    ]
    ok = _template("run {run} failed")
    assert check(ok, catalog, compiled(catalog), "x.po") == []
    assert check(ok, catalog, b"old", "x.po") == [
        "x.po: the .mo beside it is stale (scripts/i18n.py compile)"
    ]


@pytest.mark.parametrize("locale", LOCALES)
def test_the_committed_mo_is_what_gettext_reads(locale: str) -> None:
    assert mo_path(locale).read_bytes() == compiled(read(locale))
    assert i18n.translate("error:", "pt-BR") == "erro:"


@pytest.mark.parametrize(
    ("env", "lang"),
    [
        ({}, "en"),
        ({"LANG": "pt_BR.UTF-8"}, "pt-BR"),
        ({"LANG": "pt_BR.UTF-8", "LC_MESSAGES": "en_US.UTF-8"}, "en"),
        ({"LANG": "en_US.UTF-8", "LC_ALL": "pt_BR.UTF-8"}, "pt-BR"),
        ({"LC_ALL": "pt_BR.UTF-8", "USINA_LANG": "en"}, "en"),
        ({"USINA_LANG": "pt-BR"}, "pt-BR"),
        ({"LANG": "C.UTF-8"}, "en"),
        ({"LANG": "fr_FR.UTF-8"}, "en"),
        ({"LC_ALL": "", "LANG": "pt_PT"}, "pt-BR"),  # the only Portuguese there is
    ],
)
def test_the_language_comes_from_usina_lang_then_the_locale(env: dict[str, str], lang: str) -> None:
    assert i18n.language_from_env(env) == lang


def test_every_failure_class_has_advice_in_both_languages() -> None:
    for klass in FailureClass:
        english = advice(klass, "r1")
        portuguese = advice(klass, "r1", lambda text: i18n.translate(text, "pt-BR"))
        assert english
        assert portuguese
        assert english != portuguese
    text = advice(FailureClass.USER_ERROR, "r1", lambda text: i18n.translate(text, "pt-BR"))
    assert text == "corrija o código ou os dados da etapa (veja o traceback) e depois " + (
        "'usina runs resume r1'"
    )


def test_event_names_stay_the_kind_in_english_and_are_words_in_portuguese() -> None:
    for kind in i18n.EVENT_KINDS:
        assert i18n.event_name(kind, "en") == kind
        assert "_" not in i18n.event_name(kind, "pt-BR")
    assert i18n.event_name("step_cached", "pt-BR") == "etapa do cache"
    assert i18n.event_name("some_plugin_event", "pt-BR") == "some_plugin_event"


def test_an_error_is_english_as_text_and_translated_where_shown() -> None:
    inner = i18n.error(
        NotFoundError,
        i18n.N_("run {run!r} does not exist; `usina runs ls` lists the runs"),
        run="r9",
    )
    outer = i18n.error(NotFoundError, i18n.N_("{error} (store: {where})"), error=inner, where="db")
    assert str(outer) == "run 'r9' does not exist; `usina runs ls` lists the runs (store: db)"
    assert i18n.error_text(outer, "en") == str(outer)
    assert i18n.error_text(outer, "pt-BR") == (
        "a execução 'r9' não existe; `usina runs ls` lista as execuções (armazenamento: db)"
    )
    assert i18n.error_text(ValueError("plain"), "pt-BR") == "plain"


def test_the_current_language_is_what_underscore_uses() -> None:
    assert i18n._("failed") == "failed"
    i18n.set_language("pt_BR.UTF-8")
    assert i18n.language() == "pt-BR"
    assert i18n._("failed") == "falhou"
    i18n.set_language("de")
    assert i18n._("failed") == "failed"


def test_the_first_errors_a_newcomer_meets_are_in_the_catalogue(tmp_path) -> None:
    from usina.errors import DefinitionError, MissingExtraError
    from usina.runtime.loader import load_pipeline

    missing = MissingExtraError("fastapi", "server")
    assert (
        str(missing) == "'fastapi' is not installed; install it with: pip install 'usina[server]'"
    )
    assert i18n.error_text(missing, "pt-BR") == (
        "'fastapi' não está instalado; instale com: pip install 'usina[server]'"
    )
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(DefinitionError) as info:
        load_pipeline(str(empty))
    assert str(info.value) == f"{empty} defines no @pipeline"
    assert i18n.error_text(info.value, "pt-BR") == f"{empty} não define nenhum @pipeline"


def test_every_run_and_step_state_has_a_name_in_the_catalogue() -> None:
    from usina.cli.display import STATE_NAMES, state_name
    from usina.engine.records import RunState, StepState

    states = {s.value for s in (*RunState, *StepState)} | {"cached"}
    assert states <= set(STATE_NAMES), states - set(STATE_NAMES)
    i18n.set_language("pt-BR")
    assert {state_name(s) for s in states}.isdisjoint(states)
    i18n.set_language("en")
    assert all(state_name(s) == s for s in states)


def _event_kinds_in(path: Path) -> set[str]:
    """String kinds passed to ``Event(...)``/``_new_event(...)``/``_event(...)`` and module
    constants that name an event kind (``SENT = "notification_sent"``)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in ("Event", "_new_event", "_event"):
                found |= {
                    a.value
                    for a in node.args
                    if isinstance(a, ast.Constant) and isinstance(a.value, str)
                }
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant):
            found.add(str(stmt.value.value))
    return {k for k in found if EVENT_KIND.match(k)}


def test_every_event_kind_recorded_in_the_code_has_a_name() -> None:
    import usina
    from usina.engine.records import RunState

    kinds: set[str] = set()
    for path in Path(usina.__file__).parent.rglob("*.py"):
        kinds |= _event_kinds_in(path)
    kinds |= {f"run_{s.value}" for s in RunState if s.finished}  # f"run_{state.value}"
    assert {"run_started", "attempt_failed", "notification_sent", "run_triggered"} <= kinds
    assert kinds <= set(i18n.EVENT_KINDS), kinds - set(i18n.EVENT_KINDS)


def test_an_errors_message_id_travels_in_json_and_reads_in_the_clients_language() -> None:
    inner = i18n.error(
        NotFoundError,
        i18n.N_("run {run!r} does not exist; `usina runs ls` lists the runs"),
        run="r9",
    )
    outer = i18n.error(NotFoundError, i18n.N_("{error} (store: {where})"), error=inner, where="db")
    body = {"detail": str(outer), **i18n.message_json(outer)}
    assert body["params"]["error"]["params"] == {"run": "r9"}
    received = i18n.from_message_json(NotFoundError(body["detail"]), body)
    assert str(received) == str(outer)
    assert i18n.error_text(received, "pt-BR") == i18n.error_text(outer, "pt-BR")
    assert i18n.message_json(ValueError("plain")) == {}

    for unusable in (
        {"message_id": "a message this client does not know {x}", "params": {"x": 1}},
        {"message_id": "{error} (store: {where})", "params": {"where": "db"}},  # a param missing
        {"message_id": "{error} (store: {where})"},
        {  # a message inside that this client does not know
            "message_id": "{error} (store: {where})",
            "params": {"where": "db", "error": {"message_id": "newer {x}", "params": {"x": 1}}},
        },
        {},
    ):
        kept = i18n.from_message_json(NotFoundError("as the server said"), unusable)
        assert i18n.error_text(kept, "pt-BR") == "as the server said"


# -- every message the CLI and the sdk show is marked -------------------------------------------

#: Calls whose first argument is text a person reads (``out.print``, ``typer.echo``, a
#: ``problems()`` list's ``append``, ...).
_SHOWN = {"print", "echo", "secho", "BadParameter", "add_column", "Table", "append"}
#: Calls that mark or carry a message (their argument is checked by the catalogue itself).
_MARKS = {"_", "N_", "error", "translate", "error_text", "state_name", "escape"}
#: What a literal may say without a translation: markup, placeholders, the program's name.
_NOT_WORDS = re.compile(r"\[/?[a-z ]*\]|\{[^}]*\}|\busina:|https?://\S*|/metrics")


def _words(node: ast.expr) -> str:
    """The letters a person would read in ``node``'s literal parts ("" when none)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return "".join(c for c in _NOT_WORDS.sub("", node.value) if c.isalpha())
    if isinstance(node, ast.JoinedStr):
        return "".join(_words(v) for v in node.values if isinstance(v, ast.Constant))
    if isinstance(node, ast.BinOp):
        return _words(node.left) + _words(node.right)
    if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "format":
        return _words(node.func.value)  # type: ignore[attr-defined]  # "...".format(), no _()
    return ""


def _usina_errors() -> set[str]:
    import usina.errors
    from usina.sdk.resources import QuantityError

    found = {
        name
        for name, value in vars(usina.errors).items()
        if isinstance(value, type) and issubclass(value, usina.errors.UsinaError)
    }
    return found | {QuantityError.__name__}


def unmarked_messages(path: Path) -> list[str]:
    """Literal text in ``path`` that reaches a person without ``_()``/``N_()``: printed, echoed,
    a table's headers, a ``typer.BadParameter``, or a usina error raised with an f-string
    instead of ``error(Kind, N_("..."), ...)``. Programmer errors (``ValueError``) are not
    messages of the CLI."""
    tree = ast.parse(path.read_text())
    kinds = _usina_errors()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            name = getattr(node.exc.func, "id", None) or getattr(node.exc.func, "attr", None)
            if name in kinds and node.exc.args and _words(node.exc.args[0]):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node.exc)[:80]}")
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            shown = [*node.args, *(k.value for k in node.keywords if k.arg == "title")]
            if name in _SHOWN and any(_words(a) for a in shown):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_the_cli_and_sdk_show_no_unmarked_message() -> None:
    import usina

    root = Path(usina.__file__).parent
    commands = [
        root / "llm" / "cli.py",
        root / "mcp" / "cli.py",
        root / "deploy" / "llm_cli.py",
        root / "deploy" / "cli.py",
        root / "serving" / "cli.py",
        root / "server" / "cli.py",
        root / "durations.py",
    ]
    paths = sorted([*(root / "cli").glob("*.py"), *(root / "sdk").glob("*.py"), *commands])
    assert len(paths) > 20
    assert all(p.exists() for p in commands)
    found = [line for path in paths for line in unmarked_messages(path)]
    assert found == [], "mark these with _() or N_() (usina.i18n):\n" + "\n".join(found)


def test_the_scan_finds_an_unmarked_message(tmp_path: Path) -> None:
    source = tmp_path / "cmd.py"
    source.write_text(
        "from usina.errors import DefinitionError\n"
        "out.print(f'deleted {name}')\n"
        "err.print('[red]' + _('failed') + '[/]')\n"
        "out.print(f'[bold]{run}[/]')\n"
        "typer.echo('token revoked')\n"
        "table = Table('project', _('name'))\n"
        "Table(title=f'{run}: running attempts')\n"
        "raise DefinitionError(f'step {s!r} is wrong')\n"
        "raise error(DefinitionError, N_('step {s!r} is wrong'), s=s)\n"
        "raise ValueError(f'timeout={t!r} must be > 0')\n"
        "raise typer.BadParameter(_('say what it watches'))\n"
        "out.print(_('run {run}').format(run=r))\n"
        "out.print('{a}  {b}'.format(a=1, b=_('x')))\n"
        "found.append(f'gpus={gpus!r} must be >= 0')\n"
        "found.append(N_('gpus={gpus!r} must be >= 0').format(gpus=gpus))\n"
    )
    lines = sorted(int(line.split(":")[1]) for line in unmarked_messages(source))
    assert lines == [2, 5, 6, 7, 8, 14]


def test_the_cli_says_its_errors_in_portuguese_with_lang_or_usina_lang(tmp_path: Path) -> None:
    from tests.integration.cli_helpers import Usina

    usina = Usina(tmp_path)
    usina.env.pop("USINA_SERVER", None)
    usina.env["USINA_LANG"] = "en"
    schedules = usina("--lang", "pt-BR", "schedules", "ls")
    assert schedules.code == 2
    assert "erro: os agendamentos ficam no servidor da plataforma: passe --server URL" in (
        " ".join(schedules.err.split())
    )
    kpi = usina("--lang", "pt-BR", "kpi", "--since", "0")
    assert "--since '0': escreva um período positivo como 30m, 12h, 7d ou 2w" in kpi.err

    usina.write("p.py", "from usina import pipeline\n\n@pipeline\ndef p():\n    pass\n")
    usina.env["USINA_LANG"] = "pt-BR"
    empty = usina("run", "p.py")
    assert empty.code == 2
    assert "erro: o pipeline 'p' não chama nenhuma etapa" in empty.err
    usina.env["USINA_LANG"] = "en"
    assert "error: pipeline 'p' calls no step" in usina("run", "p.py").err


def test_the_servers_refusals_read_in_the_readers_language() -> None:
    import io
    from email.message import Message
    from urllib.error import HTTPError

    from usina.cli.remote import _error

    def refused(code: int, body: bytes) -> BaseException:
        return _error(HTTPError("http://h/api", code, "x", Message(), io.BytesIO(body)), "http://h")

    denied = refused(401, b'{"detail": "unknown token"}')
    assert str(denied) == (
        "the server at http://h refused the token (unknown token); set USINA_TOKEN to a token "
        "from 'usina token create'"
    )
    assert i18n.error_text(denied, "pt-BR") == (
        "o servidor em http://h recusou o token (unknown token); defina USINA_TOKEN com um token "
        "de 'usina token create'"
    )
    inner = {"message_id": "run {run!r} does not exist; `usina runs ls` lists the runs"}
    body = {"detail": "run 'r9' does not exist; `usina runs ls` lists the runs", **inner}
    forbidden = refused(403, json.dumps({**body, "params": {"run": "r9"}}).encode())
    assert i18n.error_text(forbidden, "pt-BR") == (
        "não permitido: a execução 'r9' não existe; `usina runs ls` lista as execuções"
    )


def test_an_sdk_definition_error_is_english_text_and_portuguese_where_shown() -> None:
    from usina.errors import DefinitionError
    from usina.sdk.step import check_memory

    with pytest.raises(DefinitionError) as info:
        check_memory("4GB")
    assert str(info.value) == "'4GB' has an unknown unit 'GB'; did you mean 4Gi?"
    assert i18n.error_text(info.value, "pt-BR") == (
        "'4GB' tem uma unidade desconhecida 'GB'; você quis dizer 4Gi?"
    )


def test_the_engines_stored_reasons_are_all_matched_back_and_read_in_portuguese() -> None:
    from usina.cli.display import STORED_TEXTS, stored_text
    from usina.engine.failures import exit_failure
    from usina.engine.policy import decide
    from usina.engine.ports import EXIT_INFRA
    from usina.sdk.resources import Resources
    from usina.sdk.retry import Retry

    advice_ids = {advice(k, "{run}") for k in FailureClass}
    made_there = {
        str(m.id)
        for m in extract()
        if any(
            where.endswith(("engine/failures.py", "engine/policy.py")) for where, _ in m.locations
        )
    }
    assert made_there - advice_ids <= set(STORED_TEXTS), made_there - advice_ids - set(STORED_TEXTS)

    grown = decide(Retry(), [FailureClass.OOM], Resources(memory="1Gi"))
    ended = exit_failure(EXIT_INFRA)
    assert ended is not None
    stored = f"oom: {grown.reason}"
    message = f"{ended.message}\nTraceback (most recent call last):\nValueError: bad"
    assert stored_text(stored) == stored  # English: as stored
    i18n.set_language("pt-BR")
    assert grown.reason.startswith("retry 1/")
    said = grown.reason.removeprefix("retry ").replace(" with memory ", " com memória ")
    assert stored_text(stored) == f"oom: nova tentativa {said}"
    assert stored_text(message).splitlines() == [
        "o runtime do usina não conseguiu carregar a tarefa ou as entradas dela, ou gravar as "
        f"saídas (saída {EXIT_INFRA})",
        "Traceback (most recent call last):",
        "ValueError: bad",
    ]
    assert stored_text("user_error: something of its own") == "user_error: something of its own"
    headline = "step 'b' failed (user_error: gave up after 1 user_error failures (retry budget 0))"
    assert stored_text(headline) == (
        "a etapa 'b' falhou (user_error: desistiu após 1 falha(s) user_error (limite de novas "
        "tentativas 0))"
    )


def test_why_a_step_ran_reads_in_portuguese_for_every_reason_the_cache_gives() -> None:
    from usina.cli.display import why_text
    from usina.engine.cache import miss_reason

    old = {
        "code": "a", "code_deps": {"train": "1", "data:x.csv": "1"}, "params": {"lr": 1},
        "inputs": {"x": 1}, "env": {"A": "1"}, "environment": "e1", "cache_version": 1,
        "outputs": 1,
    }  # fmt: skip
    new = {
        "code": "b", "code_deps": {"train": "2", "data:x.csv": "2"}, "params": {"lr": 2},
        "inputs": {"x": 2}, "env": {"A": "2"}, "environment": "e2", "cache_version": 2,
        "outputs": 2,
    }  # fmt: skip
    everything = miss_reason(old, new)
    only_code = miss_reason({**old, "code_deps": {}}, {**old, "code": "z", "code_deps": {}})
    reasons = [everything, only_code, miss_reason(None, new), "resume: failed"]
    assert [why_text(w) for w in reasons] == reasons  # English: as stored
    i18n.set_language("pt-BR")
    assert why_text(everything) == (
        "mudou: código de train e arquivo de dados x.csv e parâmetro lr e entrada x e variável de "
        "ambiente A e o ambiente Python (pacotes instalados) e cache_version e o número de saídas"
    )
    assert why_text(only_code) == "mudou: código da etapa"
    assert why_text("resume: first run") == "retomada: primeira execução"
    assert why_text("resume: failed") == "retomada: falhou"
    assert why_text("something a plugin said") == "something a plugin said"


def test_each_stored_text_is_matched_back_to_its_own_message_not_a_neighbours() -> None:
    from usina.cli.display import CHANGED_PARTS, STORED_TEXTS, WHY_TEXTS
    from usina.cli.profile_cmds import CURVE_TEXTS

    for texts in (STORED_TEXTS, WHY_TEXTS, CHANGED_PARTS, CURVE_TEXTS):
        for template in texts:
            values = {name: f"<{name}>" for name in placeholders(template)}
            english = template.format(**values)
            portuguese = i18n.translate(template, "pt-BR").format(**values)
            assert portuguese != english or template == "cache_version", template
            assert i18n.reword(english, texts, "pt-BR") == portuguese
            assert i18n.reword(english, texts, "en") == english


def test_every_problem_a_step_can_have_reads_in_portuguese() -> None:
    from usina.sdk.distributed import Torchrun
    from usina.sdk.resources import Resources
    from usina.sdk.retry import Retry
    from usina.sdk.step import PROBLEM_TEXTS, _parse_duration

    found = [
        *Resources(cpu="0", memory="4GB", shm="100", gpus=0, gpu_type="a100", mig="x").problems(),
        *Resources(cpu="lots", memory="1Mx", gpus=-1).problems(),
        *Resources(gpus=1, mig="1g.10gb", shared_gpu=True).problems(),
        *Retry(user=-1, oom_grow=0.5, backoff=-1).problems(),
        *Torchrun(nodes=0, port=80, rdzv_timeout=0, min_nodes=5, max_restarts=-1).problems(),
        *Torchrun(port="p").problems(),  # type: ignore[arg-type]
    ]
    for bad in (0, "soon"):
        with pytest.raises(ValueError, match=r"^timeout=") as info:
            _parse_duration(bad)
        found.append(str(info.value))
    assert len(found) >= 20
    for problem in found:
        said = i18n.Said([problem], PROBLEM_TEXTS)
        assert str(said) == problem
        assert said.translated("en") == problem
        assert said.translated("pt-BR") != problem, problem


def test_a_steps_problems_are_english_text_and_portuguese_where_shown() -> None:
    from usina.errors import DefinitionError
    from usina.sdk.resources import Resources
    from usina.sdk.step import step

    def train():  # type: ignore[no-untyped-def]
        return 1

    with pytest.raises(DefinitionError) as info:
        step(resources=Resources(memory="4GB"))(train)
    assert str(info.value) == (
        "step 'train' is not valid: it has no return annotation; annotate what it returns "
        "(e.g. '-> pl.DataFrame', '-> dict', or '-> None'); memory: '4GB' has an unknown unit "
        "'GB'; did you mean 4Gi?"
    )
    assert i18n.error_text(info.value, "pt-BR") == (
        "a etapa 'train' não é válida: ela não tem anotação de retorno; anote o que ela retorna "
        "(por exemplo '-> pl.DataFrame', '-> dict' ou '-> None'); memory: '4GB' tem uma "
        "unidade desconhecida 'GB'; você quis dizer 4Gi?"
    )
    assert i18n.message_json(info.value)["params"]["problems"] == str(info.value).split(": ", 1)[1]


def _help_app() -> typer.Typer:
    """A small app whose help texts are partly in the catalogue."""
    app = typer.Typer(add_completion=False)

    @app.command("ls")
    def ls(
        limit: Annotated[int, typer.Option(help="how many runs")] = 20,
        odd: Annotated[int, typer.Option(help="a text\n  the catalogue\nlacks")] = 1,
    ) -> None:
        """List runs,
        newest first.

        A second paragraph the catalogue lacks.

        \b
        kept
          as it is"""

    @app.command("serve")
    def serve() -> None:
        """(needs: pip install 'usina[serving]')"""

    return app


def _helps(command: object) -> list[str | None]:
    found: list[str | None] = []
    for sub in getattr(command, "commands", {}).values():
        found += [sub.help, *(p.help for p in sub.params if getattr(p, "help", None))]
    return found


def test_help_texts_are_in_the_language_asked_for_and_english_stays_as_built() -> None:
    english = _helps(help.translated(_help_app(), "en"))
    assert english == _helps(typer.main.get_command(_help_app()))
    portuguese = _helps(help.translated(_help_app(), "pt-BR"))
    assert portuguese == [
        "Lista as execuções, das mais novas para as mais antigas.\n\n"
        "A second paragraph the catalogue lacks.\n\n\b\nkept\n  as it is",
        "quantas execuções",
        "a text\n  the catalogue\nlacks",
        "(requer: pip install 'usina[serving]')",
    ]


def test_help_texts_are_extracted_as_one_line_per_paragraph_with_what_shows_them() -> None:
    found = {(text, shown_by) for text, _file, _line, shown_by in help.help_texts(_help_app())}
    assert found == {
        ("List runs, newest first.", "usina ls"),
        ("A second paragraph the catalogue lacks.", "usina ls"),
        ("how many runs", "usina ls --limit"),
        ("a text the catalogue lacks", "usina ls --odd"),
        ("(needs: pip install 'usina[serving]')", "usina serve"),
    }


def test_every_help_text_of_the_app_is_in_the_catalogue_and_shows_translated() -> None:
    from usina.cli.main import build_app

    ids = {m.id for m in extract()}
    texts = {text for text, *_where in help.help_texts(build_app())}
    assert texts <= ids
    assert {"List runs, newest first.", "how many runs", "FILE.py[:PIPELINE]"} <= texts
    # the second paragraph of `usina k8s render`, its line breaks made spaces
    second = (
        "The Jobs read and write the artifact store (USINA_ARTIFACTS_URL): it must be one the "
        "pods can reach (s3://, gs://, ...); a local path is refused unless "
        "--allow-local-artifacts."
    )
    assert second in texts
    shown = typer.main.get_command(build_app())
    said = help.translated(build_app(), "pt-BR")
    english, portuguese = _all_helps(shown), _all_helps(said)
    assert len(english) == len(portuguese) > 150
    assert [e for e, p in zip(english, portuguese, strict=True) if e == p] == ["pods", "ISO 8601"]


def _all_helps(command: object) -> list[str]:
    found = [help.message_id(t) for t in (getattr(command, "help", None) or "").split("\n\n") if t]
    for param in getattr(command, "params", []):
        if getattr(param, "help", None):
            found.append(param.help)
    for sub in getattr(command, "commands", {}).values():
        found += _all_helps(sub)
    return found


def test_the_check_fails_when_a_help_text_has_no_translation() -> None:
    catalog = read("pt_BR")
    assert check(extract(), catalog, compiled(catalog), "x.po") == []
    del catalog["List runs, newest first."]
    catalog["how many runs"].string = ""
    assert check(extract(), catalog, compiled(catalog), "x.po") == [
        "x.po: 'List runs, newest first.' is not in the catalogue (run scripts/i18n.py)",
        "x.po: 'how many runs' has no translation",
    ]


@pytest.mark.parametrize(
    ("argv", "lang"),
    [
        (["--lang", "pt-BR", "run", "--help"], "pt-BR"),
        (["--lang=pt-BR", "runs", "ls", "--help"], "pt-BR"),
        (["--server", "--lang", "runs", "--lang", "en"], None),  # --server's value, then a command
        (["--token", "t", "--lang", "en", "--help"], "en"),
        (["run", "--lang", "pt-BR"], None),  # the command's own words
        (["--lang"], None),
    ],
)
def test_the_language_of_help_is_read_from_the_root_options(
    argv: list[str], lang: str | None
) -> None:
    from usina.cli.main import _ROOT_VALUE_OPTIONS

    assert help.lang_in(argv, _ROOT_VALUE_OPTIONS) == lang


def _shadowing_functions(source: str) -> list[str]:
    """Functions that call ``_()`` and also assign ``_`` (``a, _, b = ...``): the assignment
    makes ``_`` local to the whole function, so the call fails with UnboundLocalError."""
    import ast

    comprehensions = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda)
    found = []

    def stores(node: ast.AST) -> bool:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (*comprehensions, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue  # a scope of its own
            if isinstance(child, ast.Name) and child.id == "_" and isinstance(child.ctx, ast.Store):
                return True
            if stores(child):
                return True
        return False

    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            calls = any(
                isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "_"
                for n in ast.walk(fn)
            )
            if calls and stores(fn):
                found.append(fn.name)
    return found


def test_no_function_hides_the_translation_function() -> None:
    import usina

    root = Path(usina.__file__).parent
    found = [
        f"{path.relative_to(root)}: {name}"
        for path in sorted(root.rglob("*.py"))
        for name in _shadowing_functions(path.read_text())
    ]
    assert found == []
    # The check can fail:
    assert _shadowing_functions("def f(x):\n    a, _, b = x\n    return _('t')\n") == ["f"]
    assert _shadowing_functions("def f(x):\n    return [a for a, _ in x], _('t')\n") == []


def test_typers_own_words_come_from_the_catalogue_through_gettext(monkeypatch) -> None:
    import gettext

    from usina.cli.click_words import TYPER_WORDS

    monkeypatch.setenv("LANGUAGE", "de")
    i18n.set_language("pt-BR")
    assert gettext.gettext("Options") == "Opções"
    assert gettext.gettext("[default: {}]") == "[padrão: {}]"
    assert all(gettext.gettext(word) != word for word in TYPER_WORDS)
    i18n.set_language("en")
    assert gettext.gettext("Options") == "Options"
    assert gettext.textdomain() == "messages"


def test_clicks_usage_errors_are_reworded_in_portuguese() -> None:
    from usina.cli.click_words import CLICK_TEXTS, usage_line

    for template in CLICK_TEXTS:
        values = {name: f"<{name}>" for name in placeholders(template)}
        english = template.format(**values)
        assert i18n.reword(english, CLICK_TEXTS, "pt-BR") != english, template
    assert usage_line("Usage: usina runs ls [OPTIONS]", "pt-BR") == "Uso: usina runs ls [OPTIONS]"
    assert usage_line("Usage: usina runs ls [OPTIONS]", "en") == "Usage: usina runs ls [OPTIONS]"


def test_every_chart_value_problem_usina_deploy_shows_reads_in_portuguese() -> None:
    from usina.backends.kubernetes import validation as v
    from usina.deploy import chart
    from usina.deploy import cli as deploy

    found = [
        *v.dns1123_label("namespace", "Bad_NS"), *v.dns1123_label("namespace", "n" * 70),
        *v.dns1123_subdomain("queue", "Team A"), *v.dns1123_subdomain("queue", "q" * 300),
        *v.label_value("queue", "-x"), *v.label_key("label", "bad key"),
        *v.env_name("env", "1BAD"), *v.image_reference("image", "usina runtime:1"),
        v.shared_artifacts_problem("/tmp/a"),
        *chart.Endpoint(name="Bad_Name", model=" ", replicas=0).problems("Bad_Release"),
        deploy.unreachable_model("models:/fraud@champion", {}),
        deploy.unreachable_model("/home/me/model", {}),
    ]  # fmt: skip
    templates = (*v.PROBLEM_TEXTS, *chart.PROBLEM_TEXTS, *deploy.PROBLEM_TEXTS)
    assert len(found) == 15
    for problem in found:
        assert problem is not None
        said = i18n.Said([problem], templates)
        assert str(said) == problem
        assert said.translated("en") == problem
        assert said.translated("pt-BR") != problem, problem
