"""The server image: ``usina server`` as the chart runs it, against PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess

from tests.images.support import container, free_port, wait_http


def test_the_server_image_answers_readyz_on_postgresql(images, postgres_url):
    port = free_port()
    name = f"usina-test-server-{os.getpid()}"
    # The image's own entrypoint and user; only the address and the database change.
    with container(
        name,
        f"--env=USINA_DATABASE_URL={postgres_url}",
        images["server"],
        "server",
        "--host=127.0.0.1",
        f"--port={port}",
    ):
        assert wait_http(f"http://127.0.0.1:{port}/readyz", name) == "ready"
        assert wait_http(f"http://127.0.0.1:{port}/healthz", name)
        whoami = subprocess.run(
            ["podman", "exec", name, "python", "-c", "import os; print(os.getuid())"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert whoami.stdout.strip() == "10001", whoami.stderr
        # Its tables were made in PostgreSQL, not in a SQLite file inside the container.
        tables = subprocess.run(
            ["podman", "exec", name, "ls", "/var/lib/usina"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert "usina.db" not in tables.stdout


def test_the_images_are_lean_non_root_and_labelled(images):
    for target, image in images.items():
        inspect = subprocess.run(
            ["podman", "image", "inspect", image], capture_output=True, text=True, check=True
        )
        (config,) = json.loads(inspect.stdout)
        user = config["Config"]["User"].split(":")[0]
        assert user.isdigit(), (target, user)
        assert int(user) >= 1000, (target, user)
        labels = config["Config"]["Labels"]
        for key in ("version", "revision", "source", "licenses", "title"):
            assert labels.get(f"org.opencontainers.image.{key}"), (target, key)
        # No compiler, no pip in the venv (nothing installs at run time), no pip cache, no
        # test folders of the installed packages.
        probe = (
            "import shutil, pathlib, site; "
            "print([t for t in ('gcc', 'cc', 'g++', 'make', '/opt/venv/bin/pip') "
            "if shutil.which(t)]); "
            "print(pathlib.Path('/root/.cache/pip').exists() or "
            "pathlib.Path('/home/usina/.cache/pip').exists()); "
            "sp = pathlib.Path(site.getsitepackages()[0]); "
            "print(sorted(str(p.relative_to(sp)) for p in sp.glob('*/tests'))[:5])"
        )
        proc = subprocess.run(
            # As root, to see every folder (the image's own user is checked above).
            [
                *("podman", "run", "--rm", "--pull=never", "--no-healthcheck", "--user=0"),
                *("--entrypoint=python", image, "-c", probe),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        tools, cache, tests = proc.stdout.splitlines()
        assert tools == "[]", (target, tools)
        assert cache == "False", target
        assert tests == "[]", (target, tests)


def test_the_charts_image_references_are_the_built_images(images):
    import yaml

    from tests.images.conftest import REPO

    chart = yaml.safe_load((REPO / "deploy/helm/usina/Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "deploy/helm/usina/values.yaml").read_text())
    for target in ("server", "serving", "runtime"):
        ref = values["images"][target]
        assert f"{ref['repository']}:{ref['tag'] or chart['appVersion']}" == images[target]
        exists = subprocess.run(["podman", "image", "exists", images[target]], check=False)
        assert exists.returncode == 0, images[target]


def test_the_images_are_within_their_size_budgets(images):
    """The budgets of scripts/build-images.sh (and the README), in MB as podman counts them."""
    import re

    from tests.images.conftest import REPO

    script = (REPO / "scripts/build-images.sh").read_text()
    found = re.findall(r"\[(server|runtime|serving)\]=\$\{BUDGET_\w+:-(\d+)\}", script)
    budgets = {target: int(mb) for target, mb in found}
    assert set(budgets) == set(images)
    for target, image in images.items():
        size = subprocess.run(
            ["podman", "image", "inspect", "--format", "{{.Size}}", image],
            capture_output=True,
            text=True,
            check=True,
        )
        mb = int(size.stdout) // 1_000_000
        assert mb <= budgets[target], f"{image} is {mb} MB, over its budget of {budgets[target]}"


def _existing(image: str, paths: list[str]) -> set[str]:
    probe = "import os, sys; print('\\n'.join(p for p in sys.argv[1:] if os.path.lexists(p)))"
    proc = subprocess.run(
        [
            *("podman", "run", "--rm", "--pull=never", "--no-healthcheck", "--user=0"),
            *("--entrypoint=python3", image, "-c", probe, *paths),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def test_the_builds_pip_configuration_left_nothing_in_the_images(images, tmp_path):
    """The machine's pip configuration and the local folders it names were mounted into the
    build (scripts/pip_build_config.py): no file, folder or empty mount point of theirs is in a
    final image, unless the base image has it (the CA bundle)."""
    import sys

    from tests.images.conftest import REPO

    out = subprocess.run(
        [sys.executable, str(REPO / "scripts/pip_build_config.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    targets = [line.split(":")[1] for line in out.stdout.splitlines()]
    assert "/etc/pip.conf" in targets
    base = _existing("localhost/usina-base:bookworm", targets)
    for target, image in images.items():
        assert _existing(image, targets) <= base, target
