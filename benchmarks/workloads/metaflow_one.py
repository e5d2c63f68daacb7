"""Smallest Metaflow run, to subtract from W1.

Metaflow requires both ``start`` and ``end``, so its smallest run has two steps, not one: the
harness divides Metaflow's (W1 - this) by 48, not 49.
"""

from metaflow import FlowSpec, step


class One(FlowSpec):
    @step
    def start(self):
        self.x = 1
        self.next(self.end)

    @step
    def end(self):
        self.x = self.x + 1


if __name__ == "__main__":
    One()
