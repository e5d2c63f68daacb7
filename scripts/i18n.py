"""usina's message catalogue, kept with Babel (the ``dev`` extra): extract the marked messages
from src/usina, merge them into each language's ``.po``, compile the ``.mo`` beside it.

    python scripts/i18n.py            # update the .po files, then compile them
    python scripts/i18n.py update     # new messages arrive untranslated, gone ones are dropped
    python scripts/i18n.py compile    # .po -> .mo (commit both: installs need no compiler)
    python scripts/i18n.py check      # exit 1 naming each message without a translation

Messages are marked with ``_()`` and ``N_()`` (``usina.i18n``); the English text is the id.
The ``--help`` texts of the commands and options are read from the built app instead
(``usina.cli.help``): a command's help paragraph by paragraph, each option's ``help=``.
tests/unit/test_i18n.py runs ``problems()``: a message without its translation fails CI.
"""

from __future__ import annotations

import functools
import io
import string
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "src" / "usina"
LOCALE_DIR = SOURCES / "i18n" / "locale"
DOMAIN = "usina"
LOCALES = ("pt_BR",)
KEYWORDS: dict[str, None] = {"_": None, "N_": None}
HEADER = """\
# usina's messages in Brazilian Portuguese. The English text is the message id; edit the
# translations here, then run `python scripts/i18n.py` (updates this file from the code and
# compiles usina.mo beside it; commit both)."""


def po_path(locale: str) -> Path:
    return LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"


def mo_path(locale: str) -> Path:
    return po_path(locale).with_suffix(".mo")


def extract() -> Catalog:
    """Every message marked in src/usina, with where it is used."""
    template = Catalog(project="usina", domain=DOMAIN)
    for filename, lineno, message, comments, context in extract_from_dir(
        SOURCES, keywords=KEYWORDS, comment_tags=("i18n:",), strip_comment_tags=True
    ):
        if not isinstance(message, str) or not message:
            continue
        template.add(
            message,
            locations=[(f"src/usina/{filename}", lineno)],
            auto_comments=comments,
            context=context,
        )
    seen: set[str] = set()
    for message, filename, lineno, shown_by in help_texts():
        template.add(
            message,
            locations=[(filename, lineno)],
            auto_comments=[] if message in seen else [f"help of `{shown_by}`"],
        )
        seen.add(message)
    return template


@functools.cache
def help_texts() -> tuple[tuple[str, str, int, str], ...]:
    """The ``--help`` texts of every command and option (``usina.cli.help``), from the whole
    app as ``usina --help`` builds it; every extra must be installed, or the help of a command
    that needs one would leave the catalogue."""
    from usina.cli.help import NEEDS_EXTRA, help_texts
    from usina.cli.main import build_app
    from usina.i18n import reword

    found: list[tuple[str, str, int, str]] = []
    for message, filename, lineno, shown_by in help_texts(build_app()):
        if reword(message, [NEEDS_EXTRA], "pt-BR") != message:
            raise SystemExit(
                f"`{shown_by}` says {message!r}: install its extra (the dev environment has "
                "every one) so that its help texts can be extracted"
            )
        path = Path(filename)
        where = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else filename
        found.append((message, where, lineno, shown_by))
    return tuple(found)


def read(locale: str) -> Catalog:
    with po_path(locale).open("rb") as fh:
        return read_po(fh, locale=locale, domain=DOMAIN)


def compiled(catalog: Catalog) -> bytes:
    buffer = io.BytesIO()
    write_mo(buffer, catalog)  # fuzzy entries are left out, as msgfmt does
    return buffer.getvalue()


def update() -> None:
    template = extract()
    for locale in LOCALES:
        path = po_path(locale)
        if path.exists():
            catalog = read(locale)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            catalog = Catalog(locale=locale, domain=DOMAIN)
        created = catalog.creation_date
        catalog.update(template, no_fuzzy_matching=True)
        catalog.obsolete.clear()  # a message gone from the code leaves the catalogue
        catalog.creation_date = created  # no diff when only line numbers moved
        catalog.fuzzy = False
        catalog.project, catalog.version = "usina", "1"
        catalog.copyright_holder = "the usina authors"
        catalog.msgid_bugs_address = "the usina issue tracker"
        catalog.last_translator = catalog.language_team = "the usina authors"
        catalog.header_comment = HEADER
        with path.open("wb") as fh:
            write_po(fh, catalog, width=100, sort_output=False, omit_header=False)


def compile_all() -> None:
    for locale in LOCALES:
        mo_path(locale).write_bytes(compiled(read(locale)))


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def problems() -> list[str]:
    """What is wrong with the catalogues (``check``) against the messages marked in the code."""
    template = extract()
    found: list[str] = []
    for locale in LOCALES:
        mo = mo_path(locale).read_bytes() if mo_path(locale).exists() else None
        where = str(po_path(locale).relative_to(ROOT))
        found += check(template, read(locale), mo, where)
    return found


def check(template: Catalog, catalog: Catalog, mo: bytes | None, where: str) -> list[str]:
    """A message of ``template`` missing from ``catalog``, untranslated or fuzzy; a translation
    whose ``{placeholders}`` differ from the English; an ``mo`` that is not ``catalog``
    compiled."""
    found: list[str] = []
    for msgid in sorted({str(m.id) for m in template if m.id}):
        message = catalog.get(msgid)
        if message is None:
            found.append(f"{where}: {msgid!r} is not in the catalogue (run scripts/i18n.py)")
        elif not message.string:
            found.append(f"{where}: {msgid!r} has no translation")
        elif message.fuzzy:
            found.append(f"{where}: {msgid!r} is marked fuzzy (check it, remove the flag)")
        elif placeholders(str(message.string)) != placeholders(msgid):
            found.append(f"{where}: {msgid!r}: the translation's placeholders differ")
    if mo != compiled(catalog):
        found.append(f"{where}: the .mo beside it is stale (scripts/i18n.py compile)")
    return found


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "all"
    if command in ("update", "all"):
        update()
    if command in ("compile", "all"):
        compile_all()
    if command == "check" or command == "all":
        issues = problems()
        for line in issues:
            print(line, file=sys.stderr)
        return 1 if issues else 0
    if command not in ("update", "compile"):
        print(f"unknown command {command!r}: update, compile, check", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
