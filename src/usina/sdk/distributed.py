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

**Elastic gangs**: ``Torchrun(nodes=(2, 4))`` (or ``nodes=4, min_nodes=2``) runs with any node
count from 2 to 4, as ``torchrun --nnodes=2:4`` does. On Kubernetes, Kueue may admit the gang
with fewer nodes than asked when the quota is short (partial admission), and a gang restarted
after a failure may get another size. Locally, a lost node (a rank killed from outside) makes
the launcher restart the remaining nodes in place, as torchrun's elastic agent does, at most
``max_restarts`` times, while at least ``min_nodes`` remain. Either way the step's code sees
the world size it got (``WORLD_SIZE``) and must resume from ``usina.checkpoint`` with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from usina.i18n import N_

KIND = "torchrun"


@dataclass(frozen=True, slots=True, init=False)
class Torchrun:
    """A gang of ``nodes x procs_per_node`` ranks started the way ``torchrun`` starts them.

    nodes: machines (Kubernetes pods) in the gang; each runs ``procs_per_node`` ranks.
    procs_per_node: ranks per node; usually the node's GPU count (``Resources.gpus``).
    port: the rendezvous port on rank 0's node (Kubernetes; locally a free port is chosen).
    rdzv_timeout: seconds a rank waits for the others to join before the attempt fails.
    min_nodes: the fewest nodes the gang may run with (elastic; None: exactly ``nodes``).
        ``nodes=(min, max)`` sets both.
    max_restarts: an elastic gang's in-place restarts after a lost node (locally).
    """

    nodes: int = 1
    procs_per_node: int = 1
    port: int = 29500
    rdzv_timeout: float = 300.0
    min_nodes: int | None = None
    max_restarts: int = 3

    def __init__(
        self,
        nodes: int | tuple[int, int] = 1,
        procs_per_node: int = 1,
        port: int = 29500,
        rdzv_timeout: float = 300.0,
        min_nodes: int | None = None,
        max_restarts: int = 3,
    ) -> None:
        if isinstance(nodes, tuple) and len(nodes) == 2:
            min_nodes, nodes = nodes
        if min_nodes is not None and min_nodes == nodes:
            min_nodes = None  # not elastic: one plan shape
        for name, value in (
            ("nodes", nodes),
            ("procs_per_node", procs_per_node),
            ("port", port),
            ("rdzv_timeout", rdzv_timeout),
            ("min_nodes", min_nodes),
            ("max_restarts", max_restarts),
        ):
            object.__setattr__(self, name, value)

    @property
    def world_size(self) -> int:
        """The most ranks: with every node the gang asks for."""
        return self.nodes * self.procs_per_node

    @property
    def elastic(self) -> bool:
        return self.min_nodes is not None

    @property
    def fewest_nodes(self) -> int:
        return self.min_nodes if self.min_nodes is not None else self.nodes

    def sized(self, nodes: int) -> Torchrun:
        """This gang with ``nodes`` nodes (what an elastic gang got)."""
        return Torchrun(
            nodes, self.procs_per_node, self.port, self.rdzv_timeout, None, self.max_restarts
        )

    def problems(self) -> list[str]:
        found: list[str] = []
        for name in ("nodes", "procs_per_node"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                said = N_("Torchrun {name}={value!r} must be a whole number >= 1")
                found.append(said.format(name=name, value=value))
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            found.append(N_("Torchrun port={port!r} must be a port number").format(port=self.port))
        elif not 1024 <= self.port <= 65535:
            said = N_("Torchrun port={port!r} must be between 1024 and 65535")
            found.append(said.format(port=self.port))
        if not self.rdzv_timeout > 0:
            said = N_("Torchrun rdzv_timeout={timeout!r} must be > 0 seconds")
            found.append(said.format(timeout=self.rdzv_timeout))
        low = self.min_nodes
        if low is not None and (
            isinstance(low, bool)
            or not isinstance(low, int)
            or (isinstance(self.nodes, int) and not 1 <= low <= self.nodes)
        ):
            said = N_(
                "Torchrun min_nodes={low!r} must be a whole number from 1 to nodes={nodes!r} "
                "(nodes=(MIN, MAX) for an elastic gang)"
            )
            found.append(said.format(low=low, nodes=self.nodes))
        if (
            isinstance(self.max_restarts, bool)
            or not isinstance(self.max_restarts, int)
            or (self.max_restarts < 0)
        ):
            said = N_("Torchrun max_restarts={value!r} must be a whole number >= 0")
            found.append(said.format(value=self.max_restarts))
        return found

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "kind": KIND,
            "nodes": self.nodes,
            "procs_per_node": self.procs_per_node,
            "port": self.port,
            "rdzv_timeout": self.rdzv_timeout,
        }
        if self.elastic:  # only then: a fixed gang's plan (and cache key) stays as it was
            found["min_nodes"] = self.min_nodes
            found["max_restarts"] = self.max_restarts
        return found

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Torchrun:
        if data.get("kind") != KIND:
            raise ValueError(f"not a Torchrun spec: {data!r}")
        return cls(
            nodes=int(data["nodes"]),
            procs_per_node=int(data["procs_per_node"]),
            port=int(data.get("port", 29500)),
            rdzv_timeout=float(data.get("rdzv_timeout", 300.0)),
            min_nodes=None if data.get("min_nodes") is None else int(data["min_nodes"]),
            max_restarts=int(data.get("max_restarts", 3)),
        )
