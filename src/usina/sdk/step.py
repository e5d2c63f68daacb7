# Over 600 lines: @step validates every option where the user wrote it (types, resources).
"""``@step``: a plain Python function that becomes one node of a pipeline.

Called inside a ``@pipeline`` function, a step does not run: it records a node in the graph
being built and returns handles (``StepOutput``) that stand for its future outputs.
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import json
import os
import textwrap
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar, overload

from usina.errors import DefinitionError
from usina.i18n import N_, Said, error, error_as
from usina.sdk.resources import QuantityError, Resources, parse_quantity
from usina.sdk.retry import Retry

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Sequence

P = ParamSpec("P")
R = TypeVar("R")

_SIMPLE_TYPES: tuple[type, ...] = (int, float, str, bool)


@dataclass(frozen=True, slots=True)
class Ref:
    """An input that is output ``index`` of node ``node`` (item ``item`` of it, a list, when
    the node is one branch of a ``map`` over a list known only at run time)."""

    node: str
    index: int
    item: int | None = None
    width: int | None = None  # the map's bound on the list's length


@dataclass(frozen=True, slots=True)
class Refs:
    """An input that is a list (``keys`` None) or a dict of step outputs (fan-in). ``optional``:
    the branches of a ``map`` over a run-time list; those past its end are left out."""

    refs: tuple[Ref, ...]
    keys: tuple[str, ...] | None = None
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Const:
    """An input given as a plain JSON-able value."""

    value: object


@dataclass(slots=True)
class Node:
    """One call of a step inside a pipeline."""

    id: str
    step: Step[..., Any]
    inputs: dict[str, Ref | Refs | Const]
    after: set[str] = field(default_factory=set)

    @property
    def upstream(self) -> set[str]:
        deps = {ref.node for ref in self.inputs.values() if isinstance(ref, Ref)}
        for value in self.inputs.values():
            if isinstance(value, Refs):
                deps |= {ref.node for ref in value.refs}
        return deps | self.after


class BuildContext:
    """Collects the nodes while a pipeline function is traced."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        self.nodes: dict[str, Node] = {}

    def add(
        self, step: Step[..., Any], inputs: dict[str, Ref | Refs | Const], name: str | None = None
    ) -> Node:
        """A node for a call of ``step``: named ``name``, else the step's name, then
        ``<name>-2``, ``<name>-3``... in call order (deterministic)."""
        if name is not None:
            if name in self.nodes:
                raise error(
                    DefinitionError,
                    N_(
                        "pipeline '{pipeline}': two steps are named {name!r}; give each call its "
                        "own name="
                    ),
                    pipeline=self.pipeline,
                    name=name,
                )
            node_id = name
        else:
            node_id = step.name
            n = 2
            while node_id in self.nodes:
                node_id = f"{step.name}-{n}"
                n += 1
        node = Node(id=node_id, step=step, inputs=inputs)
        self.nodes[node_id] = node
        return node


_building: contextvars.ContextVar[BuildContext | None] = contextvars.ContextVar(
    "usina_building", default=None
)


def building() -> BuildContext | None:
    return _building.get()


def set_building(ctx: BuildContext | None) -> contextvars.Token[BuildContext | None]:
    return _building.set(ctx)


class MapOutput:
    """The outputs of the branches of ``step.map(...)``: pass it to a step as one input, which
    gets the list of the branches' results (in the list's order)."""

    __slots__ = ("handles", "optional", "step")

    def __init__(self, step: str, handles: list[StepOutput], *, optional: bool) -> None:
        self.step = step
        self.handles = handles
        self.optional = optional

    def __repr__(self) -> str:
        return f"MapOutput({self.step!r}, {len(self.handles)} branches)"

    def __bool__(self) -> bool:
        raise error(
            DefinitionError,
            N_(
                "the outputs of {step}.map(...) were used as a condition inside the pipeline "
                "function; they only exist when the steps run, so branch inside a step instead"
            ),
            step=self.step,
        )


class StepOutput:
    """A handle for a step's output while a pipeline is being built."""

    __slots__ = ("_ctx", "index", "node")

    def __init__(self, ctx: BuildContext, node: str, index: int | None) -> None:
        self._ctx = ctx
        self.node = node
        self.index = index

    def after(self, *others: StepOutput | tuple[StepOutput, ...]) -> StepOutput:
        """Order this output's step after other steps, without passing data."""
        for other in others:
            handles = other if isinstance(other, tuple) else (other,)
            for handle in handles:
                self._ctx.nodes[self.node].after.add(handle.node)
        return self

    def __repr__(self) -> str:
        return f"StepOutput({self.node!r}, {self.index!r})"

    def __bool__(self) -> bool:
        raise error(
            DefinitionError,
            N_(
                "the output of step {step!r} was used as a condition inside the pipeline function; "
                "outputs only exist when the step runs, so branch inside a step instead"
            ),
            step=self.node,
        )


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: keep the raw annotations
        return dict(getattr(fn, "__annotations__", {}))


def _output_count(annotation: Any) -> int:
    if annotation is None or annotation is type(None) or annotation == "None":
        return 0
    origin = typing.get_origin(annotation)
    if origin is tuple:
        args = typing.get_args(annotation)
        if args and args[-1] is not Ellipsis:
            return len(args)
    return 1


def _code_hash(fn: Callable[..., Any], extra: str) -> str:
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        source = repr(code.co_code) if code is not None else repr(fn)
    return hashlib.sha256((source + "\0" + extra).encode()).hexdigest()


_NO_PICKLE_MODULES = {"builtins", "typing", "collections", "numpy", "pandas", "polars", "pyarrow"}


def _needs_pickle(annotation: Any) -> str | None:
    """The name of a type in a return annotation that only pickle can store, if any."""
    if annotation is None or isinstance(annotation, str) or annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple):
        for arg in typing.get_args(annotation):
            found = _needs_pickle(arg)
            if found is not None:
                return found
        return None
    if origin is not None or not isinstance(annotation, type):
        return None
    if issubclass(annotation, dict | list | tuple | str | bytes | int | float):
        return None
    module = (getattr(annotation, "__module__", "") or "").split(".", 1)[0]
    if module in _NO_PICKLE_MODULES:
        return None
    return f"{module}.{annotation.__qualname__}"


def data_hashes(step: Step[..., Any], root: str) -> dict[str, str]:
    """``{"data:<path>": content hash}`` of the files a step declares with ``files=``."""
    out: dict[str, str] = {}
    for name in step.files:
        path = name if os.path.isabs(name) else os.path.join(root, name)
        if os.path.isdir(path):
            paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
        elif os.path.isfile(path):
            paths = [path]
        else:
            raise error(
                DefinitionError,
                N_(
                    "step '{step}': files= names {file!r}, which does not exist under the project "
                    "root {root}; fix the path or create the file"
                ),
                step=step.name,
                file=name,
                root=root,
            )
        digest = hashlib.sha256()
        for item in paths:
            digest.update(os.path.relpath(item, path).encode() + b"\0")
            digest.update(_file_hash(item).encode())
        out[f"data:{name}"] = digest.hexdigest()[:16]
    return out


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _file_hash(path: str) -> str:
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def _matches(value: object, annotation: Any) -> bool:
    """A light check of a constant against a simple annotation; unknown types pass."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (str, bool):
        return isinstance(value, annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is None or annotation is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is dict:
        return isinstance(value, dict)
    return True


class Step(Generic[P, R]):
    """A function run as one pipeline step, in its own process, with its own resources."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        resources: Resources | None = None,
        retry: Retry | None = None,
        timeout: float | str | None = None,
        cache: bool = True,
        cache_version: str | None = None,
        pickle: bool = False,
        env: Sequence[str] = (),
        files: Sequence[str] = (),
        distributed: object | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.resources = resources or Resources()
        self.retry = retry or Retry()
        self.cache = cache
        self.cache_version = cache_version
        self.pickle = pickle
        self.env = tuple(env)
        self.files = tuple(files)
        self.distributed = distributed
        self.signature = inspect.signature(fn)
        self.hints = _type_hints(fn)
        self.timeout = self._check(timeout)
        self.outputs = _output_count(self.hints.get("return"))
        self.code_hash = _code_hash(fn, f"{self.name}|{cache_version}|{self.outputs}")
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__qualname__ = getattr(fn, "__qualname__", self.name)
        self.__module__ = getattr(fn, "__module__", __name__)

    def _check(self, timeout: float | str | None) -> float | None:
        problems: list[str] = []
        if "return" not in getattr(self.fn, "__annotations__", {}):
            problems.append(
                N_(
                    "it has no return annotation; annotate what it returns "
                    "(e.g. '-> pl.DataFrame', '-> dict', or '-> None')"
                )
            )
        for param in self.signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                said = N_("parameter '{name}' is *args/**kwargs; name each input")
                problems.append(said.format(name=param.name))
        if not self.pickle:
            needs = _needs_pickle(self.hints.get("return"))
            if needs is not None:
                said = N_(
                    "it returns {type}, which usina can only store with pickle; return a "
                    "DataFrame, array, dict/list/str/number or bytes, or allow pickle with "
                    "@step(pickle=True) (load it only from stores you trust)"
                )
                problems.append(said.format(type=needs))
        if isinstance(self.files, str) or not all(isinstance(f, str) for f in self.files):
            problems.append(N_("files= must be a list of paths, e.g. files=['data/raw.csv']"))
        problems += self.resources.problems()
        problems += self.retry.problems()
        check = getattr(self.distributed, "problems", None)
        if callable(check):
            problems += check()
        seconds: float | None = None
        if timeout is not None:
            try:
                seconds = _parse_duration(timeout)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise error(
                DefinitionError,
                N_("step '{step}' is not valid: {problems}"),
                step=self.name,
                problems=Said(problems, PROBLEM_TEXTS),
            )
        return seconds

    # Called inside a pipeline: record a node. Outside: refuse with a clear message.
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        ctx = building()
        if ctx is None:
            raise error(
                DefinitionError,
                N_(
                    "step '{step}' was called outside a @pipeline; steps only run inside a "
                    "pipeline (usina run FILE). To call the plain function, use {step}.fn(...)"
                ),
                step=self.name,
            )
        name: str | None = None
        if "name" in kwargs and "name" not in self.signature.parameters:
            given = kwargs.pop("name")
            _check_name(self.name, given)
            name = str(given)
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise error(
                DefinitionError,
                N_("step '{step}' was called wrongly: {error}"),
                step=self.name,
                error=exc,
            ) from exc
        bound.apply_defaults()
        inputs: dict[str, Ref | Refs | Const] = {}
        for pname, value in bound.arguments.items():
            inputs[pname] = self._input(ctx, pname, value)
        node = ctx.add(self, inputs, name)
        handles: R = self._handles(ctx, node)
        return handles

    def named(self, name: str) -> Callable[..., Any]:
        """This step called under its own node name (for a step with a parameter ``name``)."""
        _check_name(self.name, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            ctx = building()
            if ctx is None:
                return self(*args, **kwargs)  # raises the outside-a-pipeline error
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            inputs = {p: self._input(ctx, p, v) for p, v in bound.arguments.items()}
            return self._handles(ctx, ctx.add(self, inputs, name))

        return call

    def map(
        self,
        over: object,
        /,
        *args: Any,
        param: str | None = None,
        name: str | None = None,
        max_width: int = 16,
        **kwargs: Any,
    ) -> MapOutput:
        """Run this step once per item of ``over``: a list (e.g. a pipeline parameter), or a
        step's output that is a list known only at run time (at most ``max_width`` items, else
        the map fails). The item goes to ``param`` (default: the first parameter); the other
        arguments go to every branch. Branches are named ``<name>[0]``, ``<name>[1]``...
        Returns a ``MapOutput`` to pass to a downstream step, which gets the list of results.
        """
        ctx = building()
        if ctx is None:
            raise error(
                DefinitionError,
                N_("{step}.map(...) was called outside a @pipeline; call it inside one"),
                step=self.name,
            )
        params = list(self.signature.parameters)
        target = param or (params[0] if params else None)
        if target is None or target not in self.signature.parameters:
            raise error(
                DefinitionError,
                N_(
                    "{step}.map(...): param={target!r} is not a parameter of the step; its "
                    "parameters: {params}"
                ),
                step=self.name,
                target=target,
                params=", ".join(params) or "none",
            )
        if self.outputs != 1:
            raise error(
                DefinitionError,
                N_(
                    "{step}.map(...): a mapped step returns one value (it returns {outputs}); "
                    "return a tuple as one value or a dict instead"
                ),
                step=self.name,
                outputs=self.outputs,
            )
        if not isinstance(max_width, int) or isinstance(max_width, bool) or max_width < 1:
            raise error(
                DefinitionError,
                N_("{step}.map(...): max_width must be a positive integer"),
                step=self.name,
            )
        base = name or self.name
        _check_name(self.name, base)
        handles: list[StepOutput] = []
        if isinstance(over, StepOutput):
            if over.index is None:
                raise error(
                    DefinitionError,
                    N_("{step}.map(...) is over step '{source}', which returns nothing"),
                    step=self.name,
                    source=over.node,
                )
            for i in range(max_width):
                inputs = self._map_inputs(ctx, target, args, kwargs)
                inputs[target] = Ref(over.node, over.index, item=i, width=max_width)
                node = ctx.add(self, inputs, f"{base}[{i}]")
                handles.append(StepOutput(ctx, node.id, 0))
            return MapOutput(self.name, handles, optional=True)
        if isinstance(over, list | tuple):
            if len(over) > max_width:
                raise error(
                    DefinitionError,
                    N_(
                        "{step}.map(...) is over {count} items, more than max_width={max_width}; "
                        "raise max_width"
                    ),
                    step=self.name,
                    count=len(over),
                    max_width=max_width,
                )
            for i, item in enumerate(over):
                inputs = self._map_inputs(ctx, target, args, kwargs)
                inputs[target] = self._input(ctx, target, item)
                node = ctx.add(self, inputs, f"{base}[{i}]")
                handles.append(StepOutput(ctx, node.id, 0))
            return MapOutput(self.name, handles, optional=False)
        raise error(
            DefinitionError,
            N_("{step}.map(...) maps over a list or a step's output, not a {type}"),
            step=self.name,
            type=type(over).__name__,
        )

    def _map_inputs(
        self, ctx: BuildContext, target: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Ref | Refs | Const]:
        others = [p for p in self.signature.parameters if p != target]
        try:
            partial = self.signature.bind_partial(**dict(zip(others, args, strict=False)), **kwargs)
        except TypeError as exc:
            raise error(
                DefinitionError,
                N_("{step}.map(...) was called wrongly: {error}"),
                step=self.name,
                error=exc,
            ) from exc
        inputs: dict[str, Ref | Refs | Const] = {}
        for pname, parameter in self.signature.parameters.items():
            if pname == target:
                continue
            if pname in partial.arguments:
                inputs[pname] = self._input(ctx, pname, partial.arguments[pname])
            elif parameter.default is not inspect.Parameter.empty:
                inputs[pname] = self._input(ctx, pname, parameter.default)
            else:
                raise error(
                    DefinitionError,
                    N_("{step}.map(...) is missing argument '{input}'"),
                    step=self.name,
                    input=pname,
                )
        return inputs

    def _handles(self, ctx: BuildContext, node: Node) -> Any:
        if self.outputs == 0:
            return StepOutput(ctx, node.id, None)
        if self.outputs == 1 and typing.get_origin(self.hints.get("return")) is not tuple:
            return StepOutput(ctx, node.id, 0)
        return tuple(StepOutput(ctx, node.id, i) for i in range(self.outputs))

    def _input(self, ctx: BuildContext, pname: str, value: object) -> Ref | Refs | Const:
        if isinstance(value, MapOutput):
            return Refs(
                tuple(self._ref(pname, h) for h in value.handles), None, optional=value.optional
            )
        if (
            isinstance(value, list | tuple)
            and value
            and all(isinstance(v, StepOutput) for v in value)
        ):
            if isinstance(value, tuple) and len({v.node for v in value}) == 1 and len(value) > 1:
                pass  # all outputs of one step as a tuple: refused below
            else:
                return Refs(tuple(self._ref(pname, v) for v in value))
        if (
            isinstance(value, dict)
            and value
            and all(isinstance(v, StepOutput) for v in value.values())
        ):
            if not all(isinstance(k, str) for k in value):
                raise error(
                    DefinitionError,
                    N_(
                        "step '{step}': input '{input}' is a dict of step outputs; its keys must "
                        "be strings"
                    ),
                    step=self.name,
                    input=pname,
                )
            return Refs(tuple(self._ref(pname, v) for v in value.values()), tuple(value.keys()))
        if isinstance(value, StepOutput):
            if value.index is None:
                raise error(
                    DefinitionError,
                    N_(
                        "step '{step}': input '{input}' is the result of step '{source}', which "
                        "returns nothing (-> None); use .after() to order it"
                    ),
                    step=self.name,
                    input=pname,
                    source=value.node,
                )
            return Ref(value.node, value.index)
        if isinstance(value, tuple) and value and all(isinstance(v, StepOutput) for v in value):
            raise error(
                DefinitionError,
                N_(
                    "step '{step}': input '{input}' got all outputs of step '{source}' as a tuple; "
                    "unpack them (a, b = {source}(...))"
                ),
                step=self.name,
                input=pname,
                source=value[0].node,
            )
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise error(
                DefinitionError,
                N_(
                    "step '{step}': input '{input}' is a {type}, not a step output or a JSON-able "
                    "constant; produce it in a step, or pass plain values"
                ),
                step=self.name,
                input=pname,
                type=type(value).__name__,
            ) from exc
        annotation = self.hints.get(pname, inspect.Parameter.empty)
        if not _matches(value, annotation):
            wanted = getattr(annotation, "__name__", annotation)
            raise error(
                DefinitionError,
                N_("step '{step}': input '{input}' expects {wanted}, got {value} ({type})"),
                step=self.name,
                input=pname,
                wanted=wanted,
                value=repr(value),
                type=type(value).__name__,
            )
        return Const(value)

    def _ref(self, pname: str, value: StepOutput) -> Ref:
        if value.index is None:
            raise error(
                DefinitionError,
                N_(
                    "step '{step}': input '{input}' holds the result of step '{source}', which "
                    "returns nothing (-> None); use .after() to order it"
                ),
                step=self.name,
                input=pname,
                source=value.node,
            )
        return Ref(value.node, value.index)

    def __repr__(self) -> str:
        return f"<step {self.name}>"


def _check_name(step: str, name: object) -> None:
    if not isinstance(name, str) or not name or len(name) > 100:
        raise error(
            DefinitionError,
            N_("step '{step}': name={name!r} must be a short non-empty string"),
            step=step,
            name=name,
        )
    bad = [c for c in name if not (c.isalnum() or c in "-_.")]
    if bad:
        raise error(
            DefinitionError,
            N_("step '{step}': name={name!r} has {bad!r}; use letters, digits, '-', '_' and '.'"),
            step=step,
            name=name,
            bad="".join(sorted(set(bad))),
        )


#: What ``Step._check`` may find wrong (here, in ``Resources``, ``Retry`` and ``Torchrun``'s
#: ``problems()``, and a quantity's unit): the same ``N_`` messages as where each is made, so
#: a step's "is not valid" error reads in the reader's language (``usina.i18n.Said``).
PROBLEM_TEXTS = (
    N_(
        "it has no return annotation; annotate what it returns "
        "(e.g. '-> pl.DataFrame', '-> dict', or '-> None')"
    ),
    N_("parameter '{name}' is *args/**kwargs; name each input"),
    N_(
        "it returns {type}, which usina can only store with pickle; return a "
        "DataFrame, array, dict/list/str/number or bytes, or allow pickle with "
        "@step(pickle=True) (load it only from stores you trust)"
    ),
    N_("files= must be a list of paths, e.g. files=['data/raw.csv']"),
    N_("timeout={value!r} must be greater than zero"),
    N_("timeout={value!r} is not a duration like '90s', '15m', '2h'"),
    N_("{name}={value!r} must be greater than zero"),
    N_("{name}: {error}"),
    N_("{name}={value!r} is less than 1Mi; did you forget the unit (Mi, Gi)?"),
    N_("gpus={gpus!r} must be a whole number >= 0"),
    N_("gpu_type={gpu_type!r} is set but gpus=0; set gpus=1 or more"),
    N_("mig/shared_gpu is set but gpus=0; gpus counts the slices or shares"),
    N_("set mig or shared_gpu, not both"),
    N_("mig={mig!r} is not a MIG profile such as '1g.10gb' or '3g.40gb'"),
    N_("{text!r} is not a quantity"),
    N_("{text!r} is not a Kubernetes quantity"),
    N_("{text!r} has an unknown unit {suffix!r}; did you mean {suggestion}?"),
    N_("{text!r} has an unknown unit {suffix!r}; use Ki, Mi, Gi, Ti or k, M, G, m"),
    N_("retry {name}={value!r} must be a whole number >= 0"),
    N_("retry oom_grow={value!r} must be >= 1.0"),
    N_("retry backoff must be >= 0 and backoff_factor >= 1"),
    N_("Torchrun {name}={value!r} must be a whole number >= 1"),
    N_("Torchrun port={port!r} must be a port number"),
    N_("Torchrun port={port!r} must be between 1024 and 65535"),
    N_("Torchrun rdzv_timeout={timeout!r} must be > 0 seconds"),
    N_(
        "Torchrun min_nodes={low!r} must be a whole number from 1 to nodes={nodes!r} "
        "(nodes=(MIN, MAX) for an elastic gang)"
    ),
    N_("Torchrun max_restarts={value!r} must be a whole number >= 0"),
)

_NOT_A_DURATION = N_("timeout={value!r} is not a duration like '90s', '15m', '2h'")


def _parse_duration(value: float | str) -> float:
    """Seconds from a number or a string like "90s", "15m", "2h", "1h30m"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(N_("timeout={value!r} must be greater than zero").format(value=value))
        return float(value)
    if isinstance(value, str):
        total = 0.0
        number = ""
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        for char in value.strip():
            if char.isdigit() or char == ".":
                number += char
            elif char in units and number:
                total += float(number) * units[char]
                number = ""
            else:
                raise ValueError(_NOT_A_DURATION.format(value=value))
        if number:
            total += float(number)
        if total > 0:
            return total
    raise ValueError(_NOT_A_DURATION.format(value=value))


@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...


@overload
def step(
    *,
    name: str | None = None,
    resources: Resources | None = None,
    retry: Retry | None = None,
    timeout: float | str | None = None,
    cache: bool = True,
    cache_version: str | None = None,
    pickle: bool = False,
    env: Sequence[str] = (),
    files: Sequence[str] = (),
    distributed: object | None = None,
) -> Callable[[Callable[P, R]], Step[P, R]]: ...


def step(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """Declare a pipeline step.

    resources: what each attempt asks for (``Resources``). retry: the ``Retry`` policy per
    failure class. timeout: seconds or "15m". cache: reuse a previous result with the same
    cache key. cache_version: bump to invalidate old results by hand. pickle: allow values
    that have no typed serializer to be pickled. env: names of environment variables that are
    passed to the step and are part of its cache key. files: data files (or folders) the step
    reads, relative to the project root; their content is part of its cache key.
    """
    if fn is not None:
        return Step(fn)

    def decorate(func: Callable[P, R]) -> Step[P, R]:
        return Step(func, **options)

    return decorate


def check_memory(text: str) -> int:
    """Bytes in a memory quantity; raises ``DefinitionError`` with the reason."""
    try:
        return int(parse_quantity(text))
    except QuantityError as exc:
        raise error_as(DefinitionError, exc) from exc
