"""A kubelet that runs pods as local processes, with the kubelet's environment and memory rules.

``Emulator(kubelet=ProcessKubelet(tmp_path))`` hands every pod the emulator's kubelet starts to
this one instead of a plain subprocess. The "image" is this checkout's environment: a command
starting with ``python`` runs under this interpreter, with ``usina`` and ``tests`` importable,
and nothing else of the host's environment (no ``AWS_*``, no ``USINA_*``): what the process
sees is what the pod spec gives it:

- the container's ``env``: ``value`` (``$(VAR)`` expanded), ``valueFrom.fieldRef`` (as the
  emulator resolves it), ``valueFrom.secretKeyRef`` and ``envFrom[].secretRef`` from the Secrets
  given with ``add_secret`` (base64 ``data`` or plain ``stringData``, as in a Secret object);
  a missing Secret or key fails the container as ``CreateContainerConfigError`` would;
- a working directory of its own, ``<root>/<namespace>/<pod>`` (also ``HOME`` and ``TMPDIR``);
- ``resources.limits.memory`` enforced: the RSS of the process tree is polled (psutil) and a
  pod over its limit is killed with SIGKILL and reported as the kubelet does, terminated with
  reason ``OOMKilled`` and exit code 137;
- stdout and stderr, merged, as the container log (the emulator serves it at ``pods/log``).

Exit codes are the container's: a process killed by signal N exits ``128 + N`` (SIGKILL 137,
SIGTERM 143). ``torchrun`` commands are not handled here (the emulator's default ``execute``
mode runs gangs).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

Obj = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
_QUANTITY = re.compile(r"^([0-9.]+)([A-Za-z]*)$")
_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
OOM_EXIT = 137
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``1G``, ``1073741824``) in bytes."""
    match = _QUANTITY.match(str(quantity).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(float(match.group(1)) * _SUFFIX[match.group(2)])


def image_env() -> dict[str, str]:
    """The environment of the "image": this interpreter's tools, with usina (wherever this
    test run imports it from) and the repository's ``tests`` importable."""
    import usina

    package_parent = str(Path(usina.__file__).resolve().parents[1])
    paths = [package_parent, str(REPO)]
    paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {
        "PATH": os.pathsep.join(
            [str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]
        ),
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return env


class ConfigError(Exception):
    """The container cannot be configured (a missing Secret or key)."""


class PodProcess(subprocess.Popen[bytes]):
    """One pod's container as a process group. ``wait()`` returns the container's exit code
    (``128 + signal`` when killed); ``reason`` is ``OOMKilled`` when its memory limit killed
    it, ``CreateContainerConfigError`` when it could not be configured, else None."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        memory_limit: int | None,
        poll: float,
        reason: str | None = None,
    ) -> None:
        super().__init__(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.reason: str | None = reason
        self.memory_limit = memory_limit
        self.peak_rss = 0
        if memory_limit is not None:
            threading.Thread(
                target=self._watch, args=(poll,), daemon=True, name=f"oom-watch-{self.pid}"
            ).start()

    def _rss(self) -> int:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def _watch(self, poll: float) -> None:
        assert self.memory_limit is not None
        while self.poll() is None:
            rss = self._rss()
            self.peak_rss = max(self.peak_rss, rss)
            if rss > self.memory_limit:
                self.reason = "OOMKilled"
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                return
            time.sleep(poll)

    def wait(self, timeout: float | None = None) -> int:
        code = super().wait(timeout)
        return 128 - code if code < 0 else code


class ProcessKubelet:
    """Starts each pod's container as a local process (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        poll: float = 0.02,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.poll = poll
        self.base_env = dict(env) if env is not None else image_env()
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.started: list[PodProcess] = []
        self._lock = threading.Lock()

    def add_secret(self, name: str, data: Mapping[str, str], namespace: str = "ml") -> None:
        """A Secret the pods of ``namespace`` may reference (plain values, like stringData)."""
        with self._lock:
            self.secrets[(namespace, name)] = dict(data)

    def add_secret_object(self, secret: Obj) -> None:
        """A ``v1`` Secret object: base64 ``data`` and plain ``stringData``."""
        meta = secret["metadata"]
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        data.update(secret.get("stringData") or {})
        self.add_secret(meta["name"], data, meta.get("namespace", "ml"))

    def _secret(self, namespace: str, name: str) -> dict[str, str]:
        with self._lock:
            found = self.secrets.get((namespace, name))
        if found is None:
            raise ConfigError(f'secret "{name}" not found')
        return found

    def container_env(
        self, pod: Obj, container: Obj, resolved: Mapping[str, str]
    ) -> dict[str, str]:
        """The container's environment: ``envFrom`` Secrets, then ``env`` in order (``resolved``
        holds what the emulator resolved: values and field references)."""
        namespace = pod["metadata"].get("namespace", "ml")
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef")
            if ref is None:
                continue
            try:
                data = self._secret(namespace, ref["name"])
            except ConfigError:
                if ref.get("optional"):
                    continue
                raise
            prefix = source.get("prefix", "")
            env.update({prefix + k: v for k, v in data.items()})
        for item in container.get("env") or []:
            name = item["name"]
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref is not None:
                try:
                    data = self._secret(namespace, ref["name"])
                    if ref["key"] not in data:
                        raise ConfigError(
                            f"couldn't find key {ref['key']} in Secret {namespace}/{ref['name']}"
                        )
                    env[name] = data[ref["key"]]
                except ConfigError:
                    if not ref.get("optional"):
                        raise
            elif name in resolved:
                env[name] = resolved[name]
        for name, value in resolved.items():  # injected by the Job controller (index)
            env.setdefault(name, value)
        return env

    def workdir(self, pod: Obj) -> Path:
        meta = pod["metadata"]
        return self.root / str(meta.get("namespace", "ml")) / str(meta["name"])

    def start(
        self, pod: Obj, container: Obj, env: dict[str, str], command: list[str]
    ) -> PodProcess:
        cwd = self.workdir(pod)
        (cwd / "tmp").mkdir(parents=True, exist_ok=True)
        limits = (container.get("resources") or {}).get("limits") or {}
        limit = memory_bytes(limits["memory"]) if "memory" in limits else None
        base = {**self.base_env, "HOME": str(cwd), "TMPDIR": str(cwd / "tmp")}
        try:
            pod_env = self.container_env(pod, container, env)
        except ConfigError as exc:
            # The kubelet would leave the container waiting (CreateContainerConfigError); here
            # it fails at once with the kubelet's message as its log.
            argv = [sys.executable, "-c", "import sys; print(sys.argv[1]); sys.exit(1)", str(exc)]
            proc = PodProcess(
                argv, env=base, cwd=cwd, memory_limit=None, poll=self.poll,
                reason="CreateContainerConfigError",
            )  # fmt: skip
        else:
            argv = [_VAR_REF.sub(lambda m: pod_env.get(m.group(1), m.group(0)), a) for a in command]
            if argv and argv[0] in ("python", "python3"):
                argv[0] = sys.executable
            proc = PodProcess(
                argv, env={**base, **pod_env}, cwd=cwd, memory_limit=limit, poll=self.poll
            )
        with self._lock:
            self.started.append(proc)
        return proc

    def close(self) -> None:
        """Kill every pod process still running (the emulator stops)."""
        with self._lock:
            procs = list(self.started)
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(5)
            if proc.stdout is not None:
                with contextlib.suppress(OSError):
                    proc.stdout.close()
