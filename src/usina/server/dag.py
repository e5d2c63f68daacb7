"""A run's DAG laid out for an inline SVG: one column per depth (longest path from a root),
steps stacked in plan order within a column, edges as curves from right to left edges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 170, 46, 60, 18, 10


@dataclass(frozen=True, slots=True)
class Box:
    id: str
    x: int
    y: int
    state: str
    label: str
    attempts: int


@dataclass(frozen=True, slots=True)
class Edge:
    path: str


@dataclass(frozen=True, slots=True)
class Layout:
    width: int
    height: int
    boxes: list[Box]
    edges: list[Edge]


def layout(nodes: list[dict[str, Any]], states: dict[str, tuple[str, int]]) -> Layout:
    """``nodes``: the plan's nodes (topological order); ``states``: id -> (state, attempts)."""
    depth: dict[str, int] = {}
    for node in nodes:
        ups = [u for u in node.get("upstream", []) if u in depth]
        depth[node["id"]] = 1 + max((depth[u] for u in ups), default=-1)
    rows: dict[int, int] = {}
    where: dict[str, tuple[int, int]] = {}
    boxes = []
    for node in nodes:
        d = depth[node["id"]]
        r = rows.get(d, 0)
        rows[d] = r + 1
        x, y = PAD + d * (NODE_W + GAP_X), PAD + r * (NODE_H + GAP_Y)
        where[node["id"]] = (x, y)
        state, attempts = states.get(node["id"], ("pending", 0))
        label = node["id"] if len(node["id"]) <= 20 else node["id"][:19] + "…"
        boxes.append(Box(node["id"], x, y, state, label, attempts))
    edges = []
    for node in nodes:
        x2, y2 = where[node["id"]]
        for up in node.get("upstream", []):
            if up not in where:
                continue
            x1, y1 = where[up]
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H // 2, x2, y2 + NODE_H // 2
            mid = (sx + ex) // 2
            edges.append(Edge(f"M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}"))
    width = PAD * 2 + (max(depth.values(), default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values(), default=1) * (NODE_H + GAP_Y) - GAP_Y
    return Layout(width, height, boxes, edges)
