"""A kubelet that runs real containers: the API emulator's pods, run by podman with real limits.

``Emulator(kubelet=PodmanKubelet(mounts=[...]))`` hands every pod the kubelet starts to podman
instead of a local process: the pod's image, its container's ``command`` (the entrypoint) and
``args``, its environment (as the emulator's kubelet built it, ``$(VAR)`` expanded), working
directory, ``runAsUser``/``runAsGroup`` (the container's ``securityContext`` over the pod's),
dropped capabilities and ``allowPrivilegeEscalation``, and ``resources.limits.memory``/``cpu`` as
the container's cgroup limits (swap off, as on a node). The container's output is the pod log,
its exit status the pod's; a container the kernel OOM-killed exits 137 (and is reported
``OOMKilled`` when podman saw the OOM event).

Volumes: there is no cluster storage, so ``mounts`` (host folders: the artifact store, the
pipeline's code) are bind-mounted at the same path in every container: ``mounts`` writable,
handed to the pod's user the way ``fsGroup`` makes a volume writable; ``read_only`` as they are.
A ``Memory`` emptyDir at ``/dev/shm`` becomes the container's ``--shm-size``. The network is
the host's (the emulator, PostgreSQL and S3 listen on loopback). ``run_args`` is the translation
alone, for tests that run a rendered Job's container by hand.

Needs podman with a working runtime (``scripts/podman-setup.sh``).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

Obj = dict[str, Any]

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


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``1G``, ``1073741824``) in bytes."""
    match = _QUANTITY.match(str(quantity).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return math.ceil(float(match.group(1)) * _SUFFIX[match.group(2)])


def cpus(quantity: str) -> float:
    """A Kubernetes CPU quantity (``500m``, ``2``) in CPUs."""
    text = str(quantity).strip()
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def container_name(pod: Obj) -> str:
    meta = pod["metadata"]
    return f"k8s-{meta.get('namespace', 'default')}-{meta['name']}"


def run_args(
    pod: Obj,
    container: Obj,
    env: dict[str, str],
    command: Sequence[str] | None = None,
    *,
    mounts: Sequence[str] = (),
    read_only: Sequence[str] = (),
    name: str | None = None,
    podman: str = "podman",
) -> list[str]:
    """The ``podman run`` command line of ``container`` in ``pod``.

    ``command`` is the container's command and args as the kubelet expanded them (default:
    ``command`` + ``args`` of the container, unexpanded).
    """
    spec = pod.get("spec") or {}
    pod_sc = spec.get("securityContext") or {}
    sc = {**pod_sc, **(container.get("securityContext") or {})}
    # Kubernetes ignores an image's HEALTHCHECK (probes are in the pod spec); so does this kubelet.
    argv = [podman, "run", "--pull=never", "--network=host", "--init=false", "--no-healthcheck"]
    if name:
        argv.append(f"--name={name}")
    user = sc.get("runAsUser")
    if user is not None:
        group = sc.get("runAsGroup", pod_sc.get("fsGroup", user))
        argv.append(f"--user={user}:{group}")
    if sc.get("allowPrivilegeEscalation") is False:
        argv.append("--security-opt=no-new-privileges")
    for cap in (sc.get("capabilities") or {}).get("drop", []):
        argv.append(f"--cap-drop={cap}")
    if sc.get("readOnlyRootFilesystem"):
        argv.append("--read-only")
    if container.get("workingDir"):
        argv.append(f"--workdir={container['workingDir']}")
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        limit = memory_bytes(limits["memory"])
        argv += [f"--memory={limit}b", f"--memory-swap={limit}b"]  # a node runs without swap
    if "cpu" in limits:
        argv.append(f"--cpus={cpus(limits['cpu']):g}")
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"]) or {}
        empty = volume.get("emptyDir")
        if mount.get("mountPath") == "/dev/shm" and empty is not None:
            if empty.get("sizeLimit"):
                argv.append(f"--shm-size={memory_bytes(empty['sizeLimit'])}b")
        else:
            raise ValueError(
                f"volume {mount['name']!r} at {mount.get('mountPath')}: the podman kubelet has "
                "no cluster storage; pass host folders as mounts=[...]"
            )
    for path in mounts:
        argv.append(f"--volume={path}:{path}:U" if user is not None else f"--volume={path}:{path}")
    for path in read_only:
        argv.append(f"--volume={path}:{path}:ro")
    for key, value in env.items():
        argv.append(f"--env={key}={value}")
    cmd = list(command) if command is not None else None
    if cmd is None:
        cmd = [*(container.get("command") or []), *(container.get("args") or [])]
        entry = container.get("command")
    else:
        entry = cmd[: len(container.get("command") or [])] or None
    if entry:
        argv.append("--entrypoint=" + json.dumps(list(entry)))
        argv += [container["image"], *cmd[len(entry) :]]
    else:
        argv += [container["image"], *cmd]
    return argv


class ContainerProcess(subprocess.Popen[bytes]):
    """``podman run`` of one pod's container. ``kill()`` removes the container (killing the
    podman client alone would leave it running); after ``wait()``, ``reason`` is the container
    status's terminated reason, and the container is removed."""

    def __init__(self, argv: list[str], name: str, podman: str) -> None:
        super().__init__(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.name = name
        self.podman = podman
        self.reason: str | None = None
        self._done = threading.Lock()
        self._finished = False

    def wait(self, timeout: float | None = None) -> int:
        code = super().wait(timeout)
        with self._done:
            if not self._finished:
                self._finished = True
                self.reason = self._reason(code)
                self._remove()
        return code

    def _reason(self, code: int) -> str:
        if code == 0:
            return "Completed"
        proc = subprocess.run(
            [self.podman, "inspect", "--format", "{{.State.OOMKilled}}", self.name],
            capture_output=True,
            text=True,
            check=False,
        )
        return "OOMKilled" if proc.stdout.strip() == "true" else "Error"

    def _remove(self) -> None:
        subprocess.run(
            [self.podman, "rm", "--force", "--time=0", self.name],
            capture_output=True,
            check=False,
        )

    def kill(self) -> None:
        self._remove()
        super().kill()


class PodmanKubelet:
    """Starts each pod's container with podman (see the module docstring)."""

    def __init__(
        self, *, mounts: Sequence[str] = (), read_only: Sequence[str] = (), podman: str = "podman"
    ) -> None:
        self.mounts = tuple(mounts)
        self.read_only = tuple(read_only)
        self.podman = podman
        self.started: list[ContainerProcess] = []

    def start(
        self, pod: Obj, container: Obj, env: dict[str, str], command: list[str]
    ) -> ContainerProcess:
        name = container_name(pod)
        subprocess.run([self.podman, "rm", "--force", "--time=0", name], capture_output=True)
        argv = run_args(
            pod,
            container,
            env,
            command,
            mounts=self.mounts,
            read_only=self.read_only,
            name=name,
            podman=self.podman,
        )
        proc = ContainerProcess(argv, name, self.podman)
        self.started.append(proc)
        return proc

    def close(self) -> None:
        """Remove every container still there (the emulator stops)."""
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
