"""W1 for Kedro: a 50-node linear chain of no-op nodes, each taking the previous one's output,
run by the SequentialRunner in this process (``MemoryDataset``s between nodes)."""

from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner

STEPS = 50


def noop(x: int) -> int:
    return x + 1


if __name__ == "__main__":
    nodes = [node(noop, f"x{i}", f"x{i + 1}", name=f"noop-{i + 1}") for i in range(STEPS)]
    catalog = DataCatalog({"x0": MemoryDataset(0)})
    out = SequentialRunner().run(Pipeline(nodes), catalog)
    last = f"x{STEPS}"
    result = catalog[last].load() if last in catalog else out[last]
    assert result == STEPS, result
