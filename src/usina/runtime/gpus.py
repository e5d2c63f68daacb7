"""The GPUs of an attempt, read through NVML (``nvidia-ml-py``, the ``gpu`` extra): utilisation,
memory used and power of each GPU the attempt may see (``CUDA_VISIBLE_DEVICES``). A GPU that
cannot be read gives zeros; no NVML means no GPU profile, never a failed step."""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import Any

log = logging.getLogger("usina.runtime.profile")


class GpuReader:
    """Per-GPU utilisation, memory and power through an NVML module (``pynvml`` or a fake)."""

    def __init__(self, nvml: Any, handles: list[tuple[int, str, str, Any]]) -> None:
        self.nvml = nvml
        self.handles = handles  # (index, uuid, name, handle)

    def describe(self) -> list[tuple[int, str, str]]:
        return [(i, u, n) for i, u, n, _ in self.handles]

    def read(self) -> list[tuple[float, float, float]]:
        """(utilisation %, memory bytes, power W) per GPU; a failed read gives zeros."""
        out: list[tuple[float, float, float]] = []
        for _, _, _, handle in self.handles:
            util = mem = power = 0.0
            with contextlib.suppress(Exception):
                util = float(self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            with contextlib.suppress(Exception):
                mem = float(self.nvml.nvmlDeviceGetMemoryInfo(handle).used)
            with contextlib.suppress(Exception):
                power = float(self.nvml.nvmlDeviceGetPowerUsage(handle)) / 1000.0
            out.append((util, mem, power))
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def open_gpus(nvml: Any = None, visible: str | None = None) -> GpuReader | None:
    """A reader for the GPUs this process may use, or None (no NVML, no driver, no GPU).

    ``visible`` is ``CUDA_VISIBLE_DEVICES``: indices or ``GPU-<uuid>`` entries; None means every
    GPU NVML sees (in a pod, the device plugin shows the container only its own).
    """
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            log.info("no GPU profile: nvidia-ml-py is not installed (pip install 'usina[gpu]')")
            return None
    try:
        nvml.nvmlInit()
    except Exception as exc:  # no driver on this machine
        log.info("no GPU profile: NVML did not start: %s", exc)
        return None
    try:
        count = int(nvml.nvmlDeviceGetCount())
        wanted: list[str] = (
            [v.strip() for v in visible.split(",") if v.strip()]
            if visible is not None
            else [str(i) for i in range(count)]
        )
        handles: list[tuple[int, str, str, Any]] = []
        for entry in wanted:
            if entry.startswith("GPU-"):
                handle = nvml.nvmlDeviceGetHandleByUUID(entry)
                index = int(nvml.nvmlDeviceGetIndex(handle))
            elif entry.isdigit() and int(entry) < count:
                index = int(entry)
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            else:  # MIG devices and unknown entries are not sampled
                continue
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            name = _text(nvml.nvmlDeviceGetName(handle))
            handles.append((index, uuid, name, handle))
    except Exception as exc:
        log.info("no GPU profile: NVML could not list the GPUs: %s", exc)
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
        return None
    if not handles:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
        return None
    return GpuReader(nvml, handles)
