"""``python -m usina.runtime --artifacts URL --attempt ID``: run one attempt (pod entry point)."""

from __future__ import annotations

import argparse
import os
import sys

from usina.bundles import bootstrap_task
from usina.engine.ports import EXIT_INFRA
from usina.runtime.execute import execute, load_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m usina.runtime")
    parser.add_argument("--artifacts", required=True, help="artifact store URL")
    parser.add_argument("--attempt", required=True, help="attempt id")
    args = parser.parse_args(argv)
    from usina.stores.artifacts import FsspecArtifactStore

    try:
        store = FsspecArtifactStore(args.artifacts)
        task = load_task(store, args.attempt)
        # The run's code bundle (USINA_BUNDLE), fetched and verified before the step loads.
        task = bootstrap_task(os.environ, store, task)
    except Exception as exc:
        print(f"usina: cannot load attempt {args.attempt}: {exc}", file=sys.stderr)
        return EXIT_INFRA
    return execute(store, task)


if __name__ == "__main__":
    sys.exit(main())
