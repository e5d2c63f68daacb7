"""The machine's pip configuration, for a container build: one pip.conf and the mounts it needs.

``python3 scripts/pip_build_config.py OUT_DIR`` merges what ``pip config list`` reports (the
configuration files and the ``PIP_*`` environment) into ``OUT_DIR/pip.conf`` and prints the
build's volume arguments, one per line: that file as the build's ``/etc/pip.conf``, and every
local path the configuration names (find-links folders, ``file://`` indexes, certificates,
constraint files; the folder above a
``file://`` index) at the same path, read-only. The index's address stays on this machine: it is
never written into the repository or an image layer (volumes are not part of layers).
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

_LINE = re.compile(r"^(?P<section>[^.]*)\.(?P<key>[^=]+)='(?P<value>.*)'$")
# Keys that only make sense on this machine, or that would change what pip does in a build.
_SKIP = {"user", "target", "prefix", "root", "require-virtualenv"}


def pip_settings() -> dict[str, dict[str, str]]:
    """``{section: {key: value}}`` as pip on this machine sees it (the environment wins)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    sections: dict[str, dict[str, str]] = {}
    env: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        match = _LINE.match(line.strip())
        if not match or match["key"] in _SKIP:
            continue
        if match["section"] == ":env:":
            env[match["key"]] = match["value"]
        else:
            sections.setdefault(match["section"], {})[match["key"]] = match["value"]
    sections.setdefault("global", {}).update(env)
    return sections


def local_paths(sections: dict[str, dict[str, str]]) -> list[str]:
    """Existing absolute paths the settings name (``file://`` URLs included), outermost first."""
    found: set[str] = set()
    for values in sections.values():
        for value in values.values():
            for token in value.split():
                path = token
                if token.startswith("file:"):
                    # A file:// index's pages link up to its files (../../files/...): mount
                    # the folder above the index.
                    path = os.path.dirname(unquote(urlparse(token).path).rstrip("/"))
                if path.startswith("/") and os.path.exists(path):
                    found.add(os.path.realpath(path) if os.path.islink(path) else path)
    kept: list[str] = []
    for path in sorted(found, key=len):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: pip_build_config.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    sections = pip_settings()
    config = configparser.ConfigParser(interpolation=None)
    for section, values in sections.items():
        config[section] = values
    conf = out / "pip.conf"
    with conf.open("w") as fh:
        config.write(fh)
    print(f"{conf.resolve()}:/etc/pip.conf:ro")
    for path in local_paths(sections):
        print(f"{path}:{path}:ro")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
