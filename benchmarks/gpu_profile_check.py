"""Check GPU profiles on a lent GPU machine (never CI): runs ``gpu_profile_pipeline.py`` with
``usina run`` and prints what the profiles and ``usina advise`` say about its two steps.

    python benchmarks/gpu_profile_check.py [--seconds 20]

Expected (issue 20's acceptance): ``busy`` > 80 % mean GPU utilisation, ``idle`` < 5 % and a
``gpu_idle`` warning from the advice. Exit code 0 when both hold. Needs torch with CUDA and
nvidia-ml-py (``pip install 'usina[gpu]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="usina-gpu-profile-"))
    env = {**os.environ, "USINA_HOME": str(home / ".usina"), "USINA_PROFILE_INTERVAL": "0.5"}
    cli = [sys.executable, "-m", "usina.cli.main"]
    pipeline = str(HERE / "gpu_profile_pipeline.py")
    run = subprocess.run(
        [*cli, "run", pipeline, "-p", f"seconds={args.seconds}", "-o", "json"],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        check=False,
    )
    print(run.stderr[-2000:], file=sys.stderr)
    if run.returncode != 0:
        print(f"the pipeline failed (exit {run.returncode})")
        return 1
    from usina.cli.settings import Settings
    from usina.engine.profiles import load_profile
    from usina.monitoring.advice import advise_pipeline
    from usina.stores.artifacts import FsspecArtifactStore
    from usina.stores.sql import SqlMetadataStore

    settings = Settings.from_env({"USINA_HOME": env["USINA_HOME"]})
    metadata = SqlMetadataStore(settings.database_url)
    artifacts = FsspecArtifactStore(settings.artifacts_url)
    run_id = json.loads(run.stdout)["id"]
    means: dict[str, float | None] = {}
    for a in metadata.get_attempts(run_id):
        found = load_profile(artifacts, a.id)
        p = found.whole
        util = p.summary.gpu_util if p is not None else None
        means[a.node] = util.mean if util is not None else None
        print(a.node, json.dumps(p.summary.to_json() if p else None, indent=1))
    advice = {s.step: s for s in advise_pipeline(metadata, artifacts, "gpu_profiles")}
    flagged = [f.message for f in advice["idle"].findings if f.kind == "gpu_idle"]
    print("mean GPU utilisation:", means)
    print("idle flagged:", flagged)
    busy, idle = means.get("busy"), means.get("idle")
    ok = busy is not None and busy > 80 and idle is not None and idle < 5 and bool(flagged)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
