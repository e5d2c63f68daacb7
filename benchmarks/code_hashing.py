"""What hashing a step's project code costs, and that it follows what a step reaches, not the
project's size (issue #13, part 1).

Generates two projects with the same 20-step pipeline whose steps reach the same 20 helper
modules: a small one (just those modules) and a large one (the same plus 180 modules no step
uses, about 200 in all). ``Pipeline.compile`` (which computes every step's code dependencies)
is timed in a fresh process for each, cold (first parse) and warm (the per-process cache keyed by
path, mtime and size), and a third case times a step that reaches all 200 modules through a
chain of imports. Prints a JSON summary with the large/small ratio (the target: about 1).

    python benchmarks/code_hashing.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

STEPS = 20
USED = 20
TOTAL = 200
REPEAT = 7

MODULE = """
from pkg import {prev}

FACTOR_{i} = {i}
LIMITS_{i} = {{"low": {i}, "high": {i} * 10}}


class Scaler{i}:
    def apply(self, x):
        return {prev}.f(x) * FACTOR_{i}


def f(x):
    return {prev}.f(x) + FACTOR_{i} + LIMITS_{i}["low"]


def g(x):
    return Scaler{i}().apply(x) - f(x)


def h(values):
    return [g(v) for v in values]
"""

FIRST = """
BASE = 1


def f(x):
    return x + BASE
"""

PIPE = """
from usina import pipeline, step
{imports}

{steps}

@pipeline
def p(x: int = 1):
{calls}
"""

MEASURE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from usina.runtime.loader import load_pipeline
pipe = load_pipeline(sys.argv[2])
times = []
for _ in range(int(sys.argv[3])):
    start = time.perf_counter()
    plan = pipe.compile()
    times.append(time.perf_counter() - start)
deps = max(len(n.code_deps) for n in plan.nodes)
print(json.dumps({"cold": times[0], "warm": min(times[1:]) if len(times) > 1 else None,
                  "max_deps": deps}))
"""


def make_project(root: Path, modules: int, reach: list[int]) -> Path:
    """``modules`` helper modules in a chain (each imports the previous); step k calls
    ``mod_<reach[k]>.h``."""
    (root / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "mod_000.py").write_text(FIRST)
    for i in range(1, modules):
        source = MODULE.format(i=i, prev=f"mod_{i - 1:03d}")
        (root / "pkg" / f"mod_{i:03d}.py").write_text(source)
    # Import the chain in order, so no import nests hundreds deep (Python's own limit).
    chain = "\n".join(f"import pkg.mod_{m:03d}" for m in range(max(reach) + 1))
    used = "\n".join(f"from pkg import mod_{m:03d}" for m in sorted(set(reach)))
    imports = chain + "\n" + used
    steps = "\n\n".join(
        textwrap.dedent(
            f"""
            @step
            def s{k}(x: int) -> list:
                return mod_{m:03d}.h([x, x + 1])
            """
        )
        for k, m in enumerate(reach)
    )
    calls = "\n".join(f"    s{k}(x)" for k in range(len(reach)))
    (root / "p.py").write_text(PIPE.format(imports=imports, steps=steps, calls=calls))
    return root / "p.py"


def measure(root: Path, pipeline: Path) -> dict[str, float]:
    existing = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), existing]))}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(root), str(pipeline), str(REPEAT)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_all() -> dict[str, object]:
    """The summary ``main`` prints (also reported by ``benchmarks/orchestration.py``)."""
    # Step k reaches modules 1..k+1 of the chain (at most USED); the same in both projects.
    reach = [1 + (k % (USED - 1)) for k in range(STEPS)]
    with tempfile.TemporaryDirectory() as tmp:
        small = make_project(Path(tmp) / "small", USED + 1, reach)
        large = make_project(Path(tmp) / "large", TOTAL, reach)
        deep = make_project(Path(tmp) / "deep", TOTAL, [TOTAL - 1])
        cases = {
            "small": measure(small.parent, small),
            "large": measure(large.parent, large),
            "deep": measure(deep.parent, deep),
        }
    per_step = {k: v["cold"] * 1000 / STEPS for k, v in cases.items() if k != "deep"}
    summary = {
        "steps": STEPS,
        "modules": {"small": USED + 1, "large": TOTAL},
        "compile_ms_per_step_cold": {k: round(v, 3) for k, v in per_step.items()},
        "compile_ms_per_step_warm": {
            k: round(cases[k]["warm"] * 1000 / STEPS, 3) for k in ("small", "large")
        },
        "large_over_small": round(per_step["large"] / per_step["small"], 2),
        "one_step_reaching_all_200_modules_ms": {
            "cold": round(cases["deep"]["cold"] * 1000, 1),
            "warm": round(cases["deep"]["warm"] * 1000, 1),
            "deps": cases["deep"]["max_deps"],
        },
    }
    return summary


def main() -> None:
    print(json.dumps(measure_all(), indent=2))


if __name__ == "__main__":
    main()
