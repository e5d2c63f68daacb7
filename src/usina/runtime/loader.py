"""Loading a user's pipeline file as a module, the same way in the CLI and in workers."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

from usina.errors import DefinitionError
from usina.i18n import N_, error
from usina.sdk.pipeline import Pipeline

if TYPE_CHECKING:
    from types import ModuleType

PREFIX = "usina_pipeline_"


def module_name_for(path: str) -> str:
    real = os.path.realpath(path)
    return PREFIX + hashlib.sha1(real.encode()).hexdigest()[:10]


def load_file(path: str) -> ModuleType:
    """Import ``path`` as a module (once per process), with its folder on ``sys.path``."""
    real = os.path.realpath(path)
    if not os.path.isfile(real):
        raise error(DefinitionError, N_("no such pipeline file: {path}"), path=path)
    name = module_name_for(real)
    if name in sys.modules:
        return sys.modules[name]
    folder = os.path.dirname(real)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, real)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise DefinitionError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise DefinitionError(import_failure(path, exc)) from exc
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_failure(path: str, exc: BaseException) -> str:
    """A short message for a pipeline file that failed to import: file, line, what."""
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename or path}:{exc.lineno or '?'}"
        return f"{where}: syntax error: {exc.msg}; fix it and run again"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    frame = frames[-1] if frames else None
    where = f"{frame.filename}:{frame.lineno}" if frame is not None else path
    if isinstance(exc, SystemExit):
        return (
            f"{where}: {path} exited (SystemExit {exc.code!r}) while being imported; a pipeline "
            "file only defines steps and pipelines: put script code under "
            '`if __name__ == "__main__":`'
        )
    if isinstance(exc, ImportError):
        return (
            f"{where}: {type(exc).__name__}: {exc}; install it, or check the import and "
            f"that the module is in {os.path.dirname(os.path.realpath(path))} or on PYTHONPATH"
        )
    return f"{where}: {type(exc).__name__} while importing {path}: {exc}"


def load_pipeline(target: str) -> Pipeline:
    """``FILE[:PIPELINE]`` -> the Pipeline object; the only one in the file when not named."""
    path, _, attr = target.partition(":")
    if not path.endswith(".py") and ":" not in target and not os.path.exists(path):
        raise error(
            DefinitionError,
            N_("{target!r} is not a pipeline file (FILE.py[:PIPELINE])"),
            target=target,
        )
    module = load_file(path)
    found = {k: v for k, v in vars(module).items() if isinstance(v, Pipeline)}
    if attr:
        candidate = getattr(module, attr, None)
        if not isinstance(candidate, Pipeline):
            names = ", ".join(sorted(found)) or "none"
            raise error(
                DefinitionError,
                N_("{path} has no pipeline named {name!r}; pipelines: {names}"),
                path=path,
                name=attr,
                names=names,
            )
        return candidate
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise error(DefinitionError, N_("{path} defines no @pipeline"), path=path)
    raise error(
        DefinitionError,
        N_("{path} defines several pipelines ({names}); choose one with {path}:NAME"),
        path=path,
        names=", ".join(sorted(found)),
    )


def resolve_callable(module: str, qualname: str, file: str | None) -> Any:
    """The object a plan node names, importing its module the way the CLI did."""
    if module.startswith(PREFIX):
        if file is None:
            raise DefinitionError(f"cannot find the file of module {module}")
        mod = load_file(file)
    else:
        mod = importlib.import_module(module)
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
