"""Resources a step asks for, written as Kubernetes quantities.

``Resources`` only stores what the user wrote; ``problems()`` explains what is wrong with it, so
that ``@step`` can report the error with the step's name before anything runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation

from usina.i18n import N_, error

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_QUANTITY = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)([eE][+-]?[0-9]+|[A-Za-z]*)$")
_COMMON_MISTAKES = {
    "KB": "Ki",
    "MB": "Mi",
    "GB": "Gi",
    "TB": "Ti",
    "Kb": "Ki",
    "Mb": "Mi",
    "Gb": "Gi",
    "g": "Gi",
    "gb": "Gi",
    "mb": "Mi",
    "kb": "Ki",
    "K": "k",
}


class QuantityError(ValueError):
    """A string is not a Kubernetes quantity."""


def parse_quantity(text: str | int | float) -> Decimal:
    """Parse a Kubernetes quantity ("500m", "4Gi", "1.5", "2e3") into a Decimal of base units."""
    if isinstance(text, bool):
        raise error(QuantityError, N_("{text!r} is not a quantity"), text=text)
    if isinstance(text, int | float):
        return Decimal(str(text))
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise error(QuantityError, N_("{text!r} is not a Kubernetes quantity"), text=text)
    number, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex already checked the form
        raise error(QuantityError, N_("{text!r} is not a Kubernetes quantity"), text=text) from exc
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL:
        return value * _DECIMAL[suffix]
    if suffix[:1] in "eE" and len(suffix) > 1:
        return value * (Decimal(10) ** int(suffix[1:]))
    hint = _COMMON_MISTAKES.get(suffix)
    if hint:
        raise error(
            QuantityError,
            N_("{text!r} has an unknown unit {suffix!r}; did you mean {suggestion}?"),
            text=text,
            suffix=suffix,
            suggestion=f"{number}{hint!s}",
        )
    raise error(
        QuantityError,
        N_("{text!r} has an unknown unit {suffix!r}; use Ki, Mi, Gi, Ti or k, M, G, m"),
        text=text,
        suffix=suffix,
    )


def memory_bytes(text: str | int) -> int:
    """A memory quantity in bytes."""
    return int(parse_quantity(text))


def cpu_millicores(text: str | int | float) -> int:
    """A CPU quantity in millicores."""
    return int(parse_quantity(text) * 1000)


def format_memory(n_bytes: int) -> str:
    """The shortest exact binary quantity for a byte count ("6Gi", "1536Mi"), else plain bytes."""
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if n_bytes % unit == 0 and n_bytes >= unit:
            return f"{n_bytes // unit}{suffix}"
    # Kubernetes accepts a plain integer; round up to whole Mi to keep it readable.
    mib = -(-n_bytes // _BINARY["Mi"])
    return f"{mib}Mi"


@dataclass(frozen=True, slots=True)
class Resources:
    """What one attempt of a step asks for.

    cpu: cores as a quantity ("500m", 2); the request, and the limit unless ``cpu_limit`` is set.
    memory: request and limit ("4Gi"); exceeding it is an ``oom`` failure.
    gpus: whole GPUs (``nvidia.com/gpu``); 0 means none.
    gpu_type: the GPU product wanted (node label value, e.g. "NVIDIA-H100-80GB-HBM3").
    shm: size of the memory-backed /dev/shm for data loaders; None means the runtime default.
    ephemeral_storage: local scratch disk, a quantity.
    mig: a MIG profile ("1g.10gb"): ``gpus`` slices of that size (``nvidia.com/mig-1g.10gb``)
        instead of whole GPUs.
    shared_gpu: ``gpus`` time-sliced shares of a GPU (``nvidia.com/gpu.shared``).
    """

    cpu: str | int | float = 1
    memory: str = "2Gi"
    gpus: int = 0
    gpu_type: str | None = None
    shm: str | None = None
    ephemeral_storage: str | None = None
    cpu_limit: str | int | float | None = None
    extra: dict[str, str] = field(default_factory=dict)
    mig: str | None = None
    shared_gpu: bool = False

    def problems(self) -> list[str]:
        """Everything that is wrong with these resources, in words a user can act on."""
        found: list[str] = []
        for name in ("cpu", "cpu_limit"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                if parse_quantity(value) <= 0:
                    said = N_("{name}={value!r} must be greater than zero")
                    found.append(said.format(name=name, value=value))
            except QuantityError as exc:
                found.append(N_("{name}: {error}").format(name=name, error=exc))
        for name in ("memory", "shm", "ephemeral_storage"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                amount = parse_quantity(value)
            except QuantityError as exc:
                found.append(N_("{name}: {error}").format(name=name, error=exc))
                continue
            if amount < 1024 * 1024:
                said = N_("{name}={value!r} is less than 1Mi; did you forget the unit (Mi, Gi)?")
                found.append(said.format(name=name, value=value))
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0:
            found.append(N_("gpus={gpus!r} must be a whole number >= 0").format(gpus=self.gpus))
        if self.gpu_type is not None and self.gpus == 0:
            said = N_("gpu_type={gpu_type!r} is set but gpus=0; set gpus=1 or more")
            found.append(said.format(gpu_type=self.gpu_type))
        if (self.mig or self.shared_gpu) and self.gpus == 0:
            found.append(N_("mig/shared_gpu is set but gpus=0; gpus counts the slices or shares"))
        if self.mig and self.shared_gpu:
            found.append(N_("set mig or shared_gpu, not both"))
        if self.mig is not None and not re.match(r"^[0-9]+g\.[0-9]+gb(\+me)?$", self.mig):
            said = N_("mig={mig!r} is not a MIG profile such as '1g.10gb' or '3g.40gb'")
            found.append(said.format(mig=self.mig))
        return found

    @property
    def memory_bytes(self) -> int:
        return memory_bytes(self.memory)

    @property
    def cpu_millicores(self) -> int:
        return cpu_millicores(self.cpu)

    def total_gpus(self, nodes: int = 1) -> int:
        """GPUs an attempt holds in all: these resources are per node, so ``gpus x nodes``
        for a gang of ``nodes`` (a distributed step), ``gpus`` otherwise."""
        return self.gpus * max(1, nodes)

    def with_memory(self, n_bytes: int) -> Resources:
        """A copy with a new memory amount (used by the ``oom`` retry)."""
        return replace(self, memory=format_memory(n_bytes))

    def to_json(self) -> dict[str, object]:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "gpus": self.gpus,
            "gpu_type": self.gpu_type,
            "shm": self.shm,
            "ephemeral_storage": self.ephemeral_storage,
            "cpu_limit": self.cpu_limit,
            "extra": dict(self.extra),
            "mig": self.mig,
            "shared_gpu": self.shared_gpu,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Resources:
        return cls(**data)  # type: ignore[arg-type]
