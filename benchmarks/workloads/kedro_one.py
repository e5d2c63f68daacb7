"""The smallest run for Kedro: one no-op node, run by the SequentialRunner in this process.

Kedro is the in-process peer: no process per step and no persistence (``MemoryDataset``s), so
what it costs is Python importing Kedro and calling the nodes; the floor that usina's isolated,
recorded steps are measured against (issue 22).
"""

from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner


def noop(x: int) -> int:
    return x + 1


if __name__ == "__main__":
    catalog = DataCatalog({"x0": MemoryDataset(0)})
    out = SequentialRunner().run(Pipeline([node(noop, "x0", "x1", name="noop")]), catalog)
    result = catalog["x1"].load() if "x1" in catalog else out["x1"]
    assert result == 1, result
