"""The docs page "Running usina as your team's platform": every command in it is run here.

``kubectl create secret`` lines must create the Secrets the values name; ``helm install`` is
rendered by Helm's Go SDK with the README's values file (every object valid, the Roles in the
projects' namespaces only, the backend config the server reads); ``usina token create`` and
``usina run`` run against a real ``usina server`` process (``USINA_SERVER``/``USINA_TOKEN``
replaced by that server's); ``usina k8s render`` runs as written. A command the test does not
know fails it, so the section cannot grow an untested command.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.conftest import REPO
from tests.deploy.validation import validate
from tests.server.conftest import CLI, cli_env, http_server  # noqa: F401 (a fixture)
from usina.deploy.chart import parse_objects, render_chart

PAGE = REPO / "docs" / "howto" / "team-platform.md"  # linked from the README


def section() -> str:
    return PAGE.read_text()


def fenced(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)\n\s*```", section(), re.S)


def test_every_command_of_the_platform_section_runs(http_server, tmp_path: Path) -> None:  # noqa: F811
    url, _token, _client, server_home = http_server
    (values_text,) = fenced("yaml")
    values: dict[str, Any] = yaml.safe_load(values_text)
    (values_file := tmp_path / "platform.yaml").write_text(values_text)
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    (laptop / "pipelines.py").write_text((server_home / "pipelines.py").read_text())
    env = cli_env(laptop)
    server_env = cli_env(server_home)  # the server's own database, as the operator has it
    secrets: dict[str, set[str]] = {}
    token = ""
    ran: list[str] = []
    for block in fenced("shell"):
        for line in block.splitlines():
            if not line.strip():
                continue
            words = shlex.split(line)
            assigned = {}
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                key, _, value = words.pop(0).partition("=")
                assigned[key] = value
            if words[:4] == ["kubectl", "-n", "usina", "create"]:
                name = words[6]
                keys = {w.split("=", 1)[1].split("=")[0] for w in words if w.startswith("--from-")}
                secrets[name] = keys
            elif words[:2] == ["helm", "install"]:
                release, chart = words[2], REPO / words[3]
                namespace = words[words.index("-n") + 1]
                assert words[words.index("-f") + 1] == values_file.name
                objects = parse_objects(
                    render_chart(values, release=release, namespace=namespace, chart=chart)
                )
                for obj in objects:
                    validate(obj)
                roles = sorted(o["metadata"]["namespace"] for o in objects if o["kind"] == "Role")
                assert roles == ["risk-ml", "usina"]  # the default's Jobs and the project's
                config = next(o for o in objects if o["metadata"]["name"].endswith("-backends"))
                risk = json.loads(config["data"]["backends.json"])["projects"]["risk"]
                assert risk["options"]["queue"] == "risk"
                assert risk["options"]["env_from_secrets"] == ["s3-credentials"]
            elif words[:1] == ["export"]:
                key, _, value = words[1].partition("=")
                env[key] = value
            elif words[:3] == ["usina", "token", "create"]:
                done = subprocess.run(
                    [*CLI, *words[1:]], env=server_env, cwd=server_home,
                    capture_output=True, text=True, timeout=60, check=True,
                )  # fmt: skip
                token = done.stdout.strip()
            elif words[:1] == ["usina"]:
                run_env = dict(env)
                if "USINA_SERVER" in assigned:
                    run_env |= {"USINA_SERVER": url, "USINA_TOKEN": token}
                done = subprocess.run(
                    [*CLI, *words[1:], *(["--output", "json"] if words[1] == "run" else [])],
                    env=run_env, cwd=laptop, capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                assert done.returncode == 0, line + "\n" + done.stdout + done.stderr
                if words[1] == "run":
                    run = json.loads(done.stdout)
                    assert run["state"] == "succeeded", run
                    assert run["project"] == "risk"
                    # A file travels as a code bundle; a name runs the server's pipeline.
                    shipped = "code bundle sha256:" in done.stderr
                    assert shipped == words[2].partition(":")[0].endswith(".py"), done.stderr
                else:
                    docs = list(yaml.safe_load_all(done.stdout))
                    assert docs
                    assert {d["metadata"]["namespace"] for d in docs} == {"risk-ml"}
            else:
                raise AssertionError(f"the README runs a command this test does not: {line}")
            ran.append(words[0] if words else line)
    assert secrets == {
        values["database"]["existingSecret"]: {"database-url"},
        values["objectStore"]["existingSecret"]: {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    }
    assert ran.count("usina") == 4
    assert token
