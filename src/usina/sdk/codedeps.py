"""Code dependencies: the project code a step can run, as a map of name -> hash.

A step's cache key must change whenever code it can execute changes, not only its own body. The
unit is a *top-level binding* of a module of the project: a ``def``, a ``class`` (with all its
methods), or the statements that assign a module-level value. From the step's own ``def``, the
names each binding loads are followed: a name bound in the same module, a name imported from
another project module (``from helpers import scale``), an attribute of an imported project
module (``helpers.scale``, ``pkg.sub.f``), transitively. A project module used as a value (not
through an attribute, e.g. ``getattr(helpers, name)``) counts whole. Modules outside the project
root, and anything under ``site-packages``, are left to the environment hash; so are usina
itself and the options of ``@step(...)`` (the plan carries them). The exception is a library
installed in editable mode (``pip install -e``, found by its ``direct_url.json``): its files are
the code someone is editing, and its version does not move when they change, so its modules
are followed like the project's.

Hashes are of the AST (``ast.dump``), so comments and formatting do not count; docstrings do.
Each module file is parsed once per process, cached by (path, mtime, size), and only the
modules a step reaches are parsed, so the cost follows what a step uses, not the project's size.

Known limit: code reached only through a value received at run time (a method of an object an
upstream step returned, a function looked up by a string) is not seen; name it in the step, or
bump ``cache_version``.
"""

from __future__ import annotations

import ast
import copy as copy_module
import functools
import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from collections.abc import Iterator

WHOLE = "*"  # the binding name that stands for a whole module


@dataclass(frozen=True, slots=True)
class _Import:
    module: str  # absolute module name
    attr: str | None  # None: the name is the module itself


@dataclass(slots=True)
class ModuleIndex:
    """One parsed module: per top-level name, its hash and the names it loads."""

    name: str
    path: str
    hashes: dict[str, str] = field(default_factory=dict)
    loads: dict[str, set[str]] = field(default_factory=dict)  # dotted chains, "helpers.scale"
    imports: dict[str, _Import] = field(default_factory=dict)
    star: list[str] = field(default_factory=list)
    whole: str = ""


_INDEX: dict[tuple[str, int, int], ModuleIndex] = {}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _chains(node: ast.AST) -> Iterator[str]:
    """Dotted names loaded inside ``node``: ``a``, ``a.b.c`` for ``a.b.c(...)``."""
    parents: dict[int, ast.AST] = {}
    for parent in ast.walk(node):
        for child in ast.iter_child_nodes(parent):
            parents[id(child)] = parent
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            parts = [sub.id]
            cur: ast.AST = sub
            while True:
                up = parents.get(id(cur))
                if isinstance(up, ast.Attribute) and up.value is cur:
                    parts.append(up.attr)
                    cur = up
                else:
                    break
            yield ".".join(parts)


def _bound_names(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [stmt.name]
    targets: list[ast.AST] = []
    if isinstance(stmt, ast.Assign):
        targets = list(stmt.targets)
    elif isinstance(stmt, ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor):
        targets = [stmt.target]
    elif isinstance(stmt, ast.With | ast.AsyncWith):
        targets = [i.optional_vars for i in stmt.items if i.optional_vars is not None]
    elif isinstance(stmt, ast.If | ast.Try):
        names: list[str] = []
        bodies = [stmt.body, stmt.orelse]
        if isinstance(stmt, ast.Try):
            bodies += [stmt.finalbody, *[h.body for h in stmt.handlers]]
        for body in bodies:
            for inner in body:
                names += _bound_names(inner)
        return names
    out: list[str] = []
    for target in targets:
        out += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return out


def _resolve_relative(module: str, level: int, target: str | None, package: str) -> str:
    if level == 0:
        return target or ""
    parts = package.split(".") if package else []
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    base = ".".join(parts)
    if target:
        return f"{base}.{target}" if base else target
    return base


def _collect_imports(index: ModuleIndex, stmt: ast.stmt, package: str) -> None:
    if isinstance(stmt, ast.Import):
        for alias in stmt.names:
            if alias.asname:
                index.imports[alias.asname] = _Import(alias.name, None)
            else:
                top = alias.name.split(".")[0]
                index.imports[top] = _Import(top, None)
    elif isinstance(stmt, ast.ImportFrom):
        source = _resolve_relative(index.name, stmt.level, stmt.module, package)
        for alias in stmt.names:
            if alias.name == "*":
                index.star.append(source)
            else:
                index.imports[alias.asname or alias.name] = _Import(source, alias.name)
    elif isinstance(stmt, ast.If | ast.Try):
        bodies = [stmt.body, stmt.orelse]
        if isinstance(stmt, ast.Try):
            bodies += [stmt.finalbody, *[h.body for h in stmt.handlers]]
        for body in bodies:
            for inner in body:
                _collect_imports(index, inner, package)


def _is_usina(module: str) -> bool:
    return module == "usina" or module.startswith("usina.")


def _without_usina_decorators(stmt: ast.stmt, index: ModuleIndex) -> ast.stmt:
    """``@step(...)``/``@usina.step(...)`` options are in the plan already: leave them out."""
    if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return stmt
    kept = []
    for deco in stmt.decorator_list:
        head = next(iter(_chains(deco)), "").split(".")[0]
        imported = index.imports.get(head)
        if imported is not None and _is_usina(imported.module):
            continue
        kept.append(deco)
    if len(kept) == len(stmt.decorator_list):
        return stmt
    copy = copy_module.copy(stmt)
    copy.decorator_list = kept
    return copy


def module_index(name: str, path: str) -> ModuleIndex:
    """The parsed index of module ``name`` at ``path``, cached by (path, mtime, size)."""
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    cached = _INDEX.get(key)
    if cached is not None and cached.name == name:
        return cached
    with open(path, "rb") as fh:
        source = fh.read()
    tree = ast.parse(source, filename=path)
    is_package = os.path.basename(path) == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    index = ModuleIndex(name=name, path=path, whole=_digest(ast.dump(tree)))
    parts: dict[str, list[str]] = {}
    for stmt in tree.body:
        _collect_imports(index, stmt, package)
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            continue
        stmt = _without_usina_decorators(stmt, index)
        dumped = ast.dump(stmt)
        loads = set(_chains(stmt))
        for bound in _bound_names(stmt):
            parts.setdefault(bound, []).append(dumped)
            index.loads.setdefault(bound, set()).update(loads)
    index.hashes = {n: _digest("\n".join(p)) for n, p in parts.items()}
    _INDEX[key] = index
    return index


class Resolver:
    """Follows a step's code through the modules of one project root."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self._paths: dict[str, str | None] = {}

    # -- where modules live -----------------------------------------------------------------

    def _in_project(self, path: str) -> bool:
        real = os.path.realpath(path)
        if "site-packages" in real.split(os.sep) or "dist-packages" in real.split(os.sep):
            return False
        for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
            if real.startswith(os.path.realpath(prefix) + os.sep) and not self.root.startswith(
                os.path.realpath(prefix) + os.sep
            ):
                return False
        if real == self.root or real.startswith(self.root + os.sep):
            return True
        return any(real.startswith(root + os.sep) for root in editable_roots())

    def path_of(self, module: str) -> str | None:
        """The source file of ``module`` when it belongs to the project, else None."""
        if module in self._paths:
            return self._paths[module]
        path: str | None = None
        if _is_usina(module):  # the framework: its version is in the environment hash
            self._paths[module] = None
            return None
        loaded = sys.modules.get(module)
        candidate = getattr(loaded, "__file__", None) if loaded is not None else None
        if candidate is None and loaded is None:
            try:
                spec = importlib.util.find_spec(module)
            except (ImportError, ValueError):
                spec = None
            candidate = spec.origin if spec is not None else None
        if candidate and candidate.endswith(".py") and self._in_project(candidate):
            path = candidate
        self._paths[module] = path
        return path

    def label(self, module: str, name: str) -> str:
        path = self.path_of(module) or module
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        return f"{rel}:{name}"

    # -- following names --------------------------------------------------------------------

    def _index(self, module: str) -> ModuleIndex | None:
        path = self.path_of(module)
        if path is None:
            return None
        try:
            return module_index(module, path)
        except (OSError, SyntaxError, ValueError):
            return None

    def deps(self, module: str, name: str) -> dict[str, str]:
        """``{"helpers.py:scale": hash, ...}``: ``module.name`` and all it can run.

        A worklist, not recursion: a chain of imports hundreds of modules deep is fine."""
        found: dict[str, str] = {}
        seen: set[tuple[str, str]] = set()
        todo: list[tuple[str, str]] = [(module, name)]
        while todo:
            item = todo.pop()
            if item in seen:
                continue
            seen.add(item)
            todo.extend(self._visit(*item, found))
        return dict(sorted(found.items()))

    def _visit(self, module: str, name: str, found: dict[str, str]) -> list[tuple[str, str]]:
        """Record ``module.name``; return what it leads to."""
        index = self._index(module)
        if index is None:
            return []
        nxt: list[tuple[str, str]] = []
        if name == WHOLE:
            found[self.label(module, WHOLE)] = index.whole
            nxt += [(module, bound) for bound in index.hashes]
            for imported in index.imports.values():
                nxt += self._import_targets(imported, [])
            return nxt
        if name in index.hashes:
            found[self.label(module, name)] = index.hashes[name]
            for chain in sorted(index.loads.get(name, ())):
                nxt += self._chain_targets(index, chain.split("."))
            return nxt
        if name in index.imports:
            return self._import_targets(index.imports[name], [])
        nxt += [(source, name) for source in index.star]
        # A submodule reached as an attribute of a package (``pkg.sub``).
        if self.path_of(f"{module}.{name}") is not None:
            nxt.append((f"{module}.{name}", WHOLE))
        return nxt

    def _chain_targets(self, index: ModuleIndex, parts: list[str]) -> list[tuple[str, str]]:
        head, rest = parts[0], parts[1:]
        if head in index.hashes:
            return [(index.name, head)]
        if head in index.imports:
            return self._import_targets(index.imports[head], rest)
        return [(source, head) for source in index.star]

    def _import_targets(self, imported: _Import, rest: list[str]) -> list[tuple[str, str]]:
        module, attr = imported.module, imported.attr
        if attr is not None:
            if self.path_of(f"{module}.{attr}") is not None:  # ``from pkg import sub``
                module, attr = f"{module}.{attr}", None
            else:
                return [(module, attr)]
        # ``module`` is a module used through ``rest``: follow submodules, then one name.
        while rest and self.path_of(f"{module}.{rest[0]}") is not None:
            index = self._index(module)
            if index is not None and rest[0] in index.hashes:
                break
            module = f"{module}.{rest[0]}"
            rest = rest[1:]
        if self.path_of(module) is None:
            return []
        return [(module, rest[0] if rest else WHOLE)]


@functools.cache
def editable_roots() -> tuple[str, ...]:
    """The source folders of the distributions installed in editable mode (PEP 610's
    ``direct_url.json`` with ``dir_info.editable``), usina's own excepted. Read once per process,
    and only when a step reaches a module outside the project and outside site-packages."""
    import importlib.metadata  # only now: it costs the CLI's start otherwise

    roots: list[str] = []
    for dist in importlib.metadata.distributions():
        try:
            raw = dist.read_text("direct_url.json")
            info = json.loads(raw) if raw else None
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict) or not (info.get("dir_info") or {}).get("editable"):
            continue
        url = urlparse(str(info.get("url", "")))
        if url.scheme != "file" or (dist.metadata["Name"] or "").lower() == "usina":
            continue
        roots.append(os.path.realpath(unquote(url.path)))
    return tuple(roots)


def project_root(start: str) -> str:
    """The project a pipeline file belongs to: the nearest folder above it with a
    ``pyproject.toml``, ``setup.py``, ``setup.cfg``, ``.git`` or ``.usina-bundle`` (an
    extracted code bundle: the project's root, whose ``.git`` stayed out); else the file's
    folder."""
    folder = os.path.dirname(os.path.realpath(start))
    here = folder
    while True:
        if any(
            os.path.exists(os.path.join(here, marker))
            for marker in ("pyproject.toml", "setup.py", "setup.cfg", ".git", ".usina-bundle")
        ):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return folder
        here = parent


def combined(deps: dict[str, str], extra: str) -> str:
    """One hash of a dependency map plus the step's own options."""
    blob = "\n".join(f"{k}={v}" for k, v in sorted(deps.items())) + "\0" + extra
    return hashlib.sha256(blob.encode()).hexdigest()


__all__ = ["WHOLE", "ModuleIndex", "Resolver", "combined", "module_index", "project_root"]
