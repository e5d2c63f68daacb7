"""``@pipeline``: a Python function whose step calls define a DAG, compiled into a ``Plan``.

The pipeline function is traced with concrete parameter values: each step call records a node.
The result, a ``Plan``, is plain JSON-able data that the engine stores and works from; the
engine never needs the user's functions, only the worker process that runs a step does.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from usina.errors import DefinitionError, ParameterError
from usina.i18n import N_, error
from usina.sdk.codedeps import Resolver, combined, project_root
from usina.sdk.step import (
    BuildContext,
    Const,
    Node,
    Ref,
    Refs,
    Step,
    data_hashes,
    set_building,
)

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

_TRUE = {"1", "true", "yes", "y", "on", "sim", "s"}
_FALSE = {"0", "false", "no", "n", "off", "nao", "não"}


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: Any
    default: object
    required: bool

    @property
    def type_name(self) -> str:
        return getattr(self.type, "__name__", str(self.type))


def coerce(param: Param, value: object) -> object:
    """Convert a value (often a CLI string) to the parameter's type, or raise ParameterError."""
    kind = param.type
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in typing.get_args(kind):
            return None
        if len(args) == 1:
            return coerce(Param(param.name, args[0], param.default, param.required), value)
        kind = Any
    try:
        if kind is Any or kind is inspect.Parameter.empty:
            return value
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int):
                return value
            if isinstance(value, str):
                return int(value.strip().replace("_", ""))
            raise ValueError
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int | float):
                return float(value)
            if isinstance(value, str):
                return float(value.strip())
            raise ValueError
        if kind is str:
            if isinstance(value, str):
                return value
            raise ValueError
        if kind in (list, dict) or typing.get_origin(kind) in (list, dict):
            parsed = json.loads(value) if isinstance(value, str) else value
            want = typing.get_origin(kind) or kind
            if not isinstance(parsed, want):
                raise ValueError
            return parsed
    except (ValueError, json.JSONDecodeError) as exc:
        raise error(
            ParameterError,
            N_("parameter '{name}' expects {type}, got {value}"),
            name=param.name,
            type=param.type_name,
            value=repr(value),
        ) from exc
    return value


@dataclass(frozen=True, slots=True)
class PlanNode:
    """One step call, as data: what to run, with which inputs and policies."""

    id: str
    step: str
    module: str
    qualname: str
    file: str | None
    inputs: dict[str, dict[str, Any]]
    upstream: tuple[str, ...]
    outputs: int
    resources: dict[str, Any]
    retry: dict[str, Any]
    timeout: float | None
    cache: bool
    cache_version: str | None
    pickle: bool
    env: tuple[str, ...]
    code_hash: str
    distributed: dict[str, Any] | None = None
    code_deps: dict[str, str] = field(default_factory=dict)  # "helpers.py:scale" -> hash

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanNode:
        values = dict(data)
        values["upstream"] = tuple(values["upstream"])
        values["env"] = tuple(values["env"])
        values["code_deps"] = dict(values.get("code_deps") or {})
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Plan:
    """A compiled pipeline: parameters and nodes in a topological order."""

    pipeline: str
    params: dict[str, Any]
    nodes: tuple[PlanNode, ...]
    source: str | None = None
    sys_path: tuple[str, ...] = field(default_factory=tuple)

    def node(self, node_id: str) -> PlanNode:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    @property
    def hash(self) -> str:
        """Identity of the pipeline's shape and code (not its parameters)."""
        shape = [(n.id, n.code_hash, n.upstream) for n in self.nodes]
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "params": self.params,
            "nodes": [n.to_json() for n in self.nodes],
            "source": self.source,
            "sys_path": list(self.sys_path),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            pipeline=data["pipeline"],
            params=dict(data["params"]),
            nodes=tuple(PlanNode.from_json(n) for n in data["nodes"]),
            source=data.get("source"),
            sys_path=tuple(data.get("sys_path", ())),
        )


def _toposort(nodes: Mapping[str, Node], pipeline: str) -> list[str]:
    for node in nodes.values():
        for dep in node.upstream:
            if dep not in nodes:
                raise error(
                    DefinitionError,
                    N_(
                        "pipeline '{pipeline}': step '{step}' depends on '{dep}', which is not "
                        "part of this pipeline"
                    ),
                    pipeline=pipeline,
                    step=node.id,
                    dep=dep,
                )
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node_id: str, path: list[str]) -> None:
        if state.get(node_id) == 2:
            return
        if state.get(node_id) == 1:
            cycle = [*path[path.index(node_id) :], node_id]
            raise error(
                DefinitionError,
                N_(
                    "pipeline '{pipeline}' has a cycle: {cycle}; step '{step}' cannot run after "
                    "itself; remove one of these dependencies"
                ),
                pipeline=pipeline,
                cycle=" -> ".join(cycle),
                step=node_id,
            )
        state[node_id] = 1
        for dep in sorted(nodes[node_id].upstream):
            visit(dep, [*path, node_id])
        state[node_id] = 2
        order.append(node_id)

    for node_id in nodes:
        visit(node_id, [])
    return order


def input_spec(value: Ref | Refs | Const) -> dict[str, Any]:
    """An input as plan data: ``{"ref": [node, index]}`` (with ``item``/``width`` for a branch
    of a map over a run-time list), ``{"refs": [[node, index], ...], "keys": [...] | None,
    "optional": bool}`` for fan-in, or ``{"const": value}``."""
    if isinstance(value, Ref):
        spec: dict[str, Any] = {"ref": [value.node, value.index]}
        if value.item is not None:
            spec["item"] = value.item
            spec["width"] = value.width
        return spec
    if isinstance(value, Refs):
        return {
            "refs": [[r.node, r.index] for r in value.refs],
            "keys": list(value.keys) if value.keys is not None else None,
            "optional": value.optional,
        }
    return {"const": value.value}


def _locate(step: Step[..., Any]) -> tuple[str, str, str | None]:
    module_name = step.fn.__module__
    qualname = step.fn.__qualname__
    module = sys.modules.get(module_name)
    if "<locals>" in qualname or module is None or getattr(module, qualname, None) is not step:
        raise error(
            DefinitionError,
            N_(
                "step '{step}' must be defined at the top level of a module (a worker process "
                "imports it by name)"
            ),
            step=step.name,
        )
    return module_name, qualname, getattr(module, "__file__", None)


class Pipeline:
    """A DAG of steps, defined by a plain Python function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        tracking: str | None = None,
        experiment: str | None = None,
    ) -> None:
        if tracking not in (None, "mlflow"):
            raise error(
                DefinitionError,
                N_(
                    "pipeline '{pipeline}': tracking={tracking} is not supported; use "
                    "tracking='mlflow' or leave it out"
                ),
                pipeline=name or fn.__name__,
                tracking=repr(tracking),
            )
        self.fn = fn
        self.name = name or fn.__name__
        self.tracking = tracking
        self.experiment = experiment or self.name
        self.__doc__ = fn.__doc__
        self.params = self._params(fn)

    def _params(self, fn: Callable[..., Any]) -> dict[str, Param]:
        try:
            hints = typing.get_type_hints(fn)
        except Exception:
            hints = {}
        params: dict[str, Param] = {}
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise error(
                    DefinitionError,
                    N_("pipeline '{pipeline}': *args/**kwargs cannot be parameters; name each one"),
                    pipeline=self.name,
                )
            required = p.default is inspect.Parameter.empty
            kind = hints.get(p.name, inspect.Parameter.empty)
            if kind is inspect.Parameter.empty and not required and p.default is not None:
                kind = type(p.default)
            default = None if required else p.default
            params[p.name] = Param(p.name, kind, default, required)
        return params

    def resolve(self, overrides: Mapping[str, object] | None = None) -> dict[str, object]:
        """Defaults merged with overrides, each coerced to its type."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            said = (
                N_("pipeline '{pipeline}' has no parameter {unknown}; its parameters are: {known}")
                if self.params
                else N_(
                    "pipeline '{pipeline}' has no parameter {unknown}; its parameters are: none"
                )
            )
            raise error(
                ParameterError,
                said,
                pipeline=self.name,
                unknown=", ".join(map(repr, unknown)),
                known=", ".join(sorted(self.params)),
            )
        values: dict[str, object] = {}
        for name, param in self.params.items():
            if name in overrides:
                values[name] = coerce(param, overrides[name])
            elif param.required:
                raise error(
                    ParameterError,
                    N_(
                        "pipeline '{pipeline}' needs parameter '{name}' ({type}); pass --param "
                        "{name}=VALUE"
                    ),
                    pipeline=self.name,
                    name=name,
                    type=param.type_name,
                )
            else:
                values[name] = param.default
        try:
            json.dumps(values, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise error(
                ParameterError,
                N_("pipeline '{pipeline}': parameters must be JSON-able values ({error})"),
                pipeline=self.name,
                error=exc,
            ) from exc
        return values

    def compile(self, overrides: Mapping[str, object] | None = None) -> Plan:
        """Trace the pipeline function and return its plan; raises DefinitionError."""
        values = self.resolve(overrides)
        ctx = BuildContext(self.name)
        token = set_building(ctx)
        try:
            self.fn(**values)
        finally:
            set_building(None)
            del token
        if not ctx.nodes:
            raise error(
                DefinitionError, N_("pipeline '{pipeline}' calls no step"), pipeline=self.name
            )
        order = _toposort(ctx.nodes, self.name)
        source = getattr(sys.modules.get(self.fn.__module__), "__file__", None)
        resolver = Resolver(project_root(source) if source else os.getcwd())
        deps_of: dict[int, dict[str, str]] = {}
        nodes = []
        for node_id in order:
            node = ctx.nodes[node_id]
            module, qualname, file = _locate(node.step)
            inputs: dict[str, dict[str, Any]] = {}
            for pname, value in node.inputs.items():
                inputs[pname] = input_spec(value)
            dist = node.step.distributed
            to_json = getattr(dist, "to_json", None)
            deps = deps_of.get(id(node.step))
            if deps is None:
                deps = {**resolver.deps(module, qualname), **data_hashes(node.step, resolver.root)}
                deps_of[id(node.step)] = deps
            code_hash = node.step.code_hash
            if deps:
                step = node.step
                code_hash = combined(deps, f"{step.name}|{step.cache_version}|{step.outputs}")
            nodes.append(
                PlanNode(
                    id=node.id,
                    step=node.step.name,
                    module=module,
                    qualname=qualname,
                    file=file,
                    inputs=inputs,
                    upstream=tuple(sorted(node.upstream)),
                    outputs=node.step.outputs,
                    resources=node.step.resources.to_json(),
                    retry=node.step.retry.to_json(),
                    timeout=node.step.timeout,
                    cache=node.step.cache,
                    cache_version=node.step.cache_version,
                    pickle=node.step.pickle,
                    env=node.step.env,
                    code_hash=code_hash,
                    distributed=to_json() if callable(to_json) else None,
                    code_deps=deps,
                )
            )
        return Plan(pipeline=self.name, params=values, nodes=tuple(nodes), source=source)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise error(
            DefinitionError,
            N_(
                "pipeline '{pipeline}' is not called directly; run it with 'usina run "
                "FILE:{pipeline}' or usina.run({pipeline})"
            ),
            pipeline=self.name,
        )

    def __repr__(self) -> str:
        return f"<pipeline {self.name}>"


def pipeline(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    tracking: str | None = None,
    experiment: str | None = None,
) -> Any:
    """Declare a pipeline: a function whose step calls form a DAG.

    tracking: "mlflow" logs every run to MLflow (a parent run, a nested run per step), in the
    experiment ``experiment`` (default: the pipeline's name).
    """
    if fn is not None:
        return Pipeline(fn, name=name, tracking=tracking, experiment=experiment)

    def decorate(func: Callable[..., Any]) -> Pipeline:
        return Pipeline(func, name=name, tracking=tracking, experiment=experiment)

    return decorate
