"""``Torchrun``: the option that makes a step a distributed (multi-process, multi-node) gang.

``@step(distributed=Torchrun(nodes=2, procs_per_node=4))`` runs the step's function once per
rank, ``nodes x procs_per_node`` ranks in all, each in its own process with the usual
``torch.distributed`` environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), plus
``USINA_DIST_BACKEND`` ("nccl" where GPUs were given to the step, else "gloo"). Only rank 0's
return value is the step's output. A failure of any rank ends the whole attempt; the engine
restarts the gang as the next attempt, which resumes from ``usina.checkpoint``.

``Resources`` are per node: ``Resources(gpus=8)`` with ``nodes=4`` is 32 GPUs. This module only
describes the gang; the local backend and the Kubernetes manifests decide how to start it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KIND = "torchrun"


@dataclass(frozen=True, slots=True)
class Torchrun:
    """A gang of ``nodes x procs_per_node`` ranks started the way ``torchrun`` starts them.

    nodes: machines (Kubernetes pods) in the gang; each runs ``procs_per_node`` ranks.
    procs_per_node: ranks per node; usually the node's GPU count (``Resources.gpus``).
    port: the rendezvous port on rank 0's node (Kubernetes; locally a free port is chosen).
    rdzv_timeout: seconds a rank waits for the others to join before the attempt fails.
    """

    nodes: int = 1
    procs_per_node: int = 1
    port: int = 29500
    rdzv_timeout: float = 300.0

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    def problems(self) -> list[str]:
        found: list[str] = []
        for name in ("nodes", "procs_per_node"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                found.append(f"Torchrun {name}={value!r} must be a whole number >= 1")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            found.append(f"Torchrun port={self.port!r} must be a port number")
        elif not 1024 <= self.port <= 65535:
            found.append(f"Torchrun port={self.port!r} must be between 1024 and 65535")
        if not self.rdzv_timeout > 0:
            found.append(f"Torchrun rdzv_timeout={self.rdzv_timeout!r} must be > 0 seconds")
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "nodes": self.nodes,
            "procs_per_node": self.procs_per_node,
            "port": self.port,
            "rdzv_timeout": self.rdzv_timeout,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Torchrun:
        if data.get("kind") != KIND:
            raise ValueError(f"not a Torchrun spec: {data!r}")
        return cls(
            nodes=int(data["nodes"]),
            procs_per_node=int(data["procs_per_node"]),
            port=int(data.get("port", 29500)),
            rdzv_timeout=float(data.get("rdzv_timeout", 300.0)),
        )
