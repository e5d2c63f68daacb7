"""``usina bundle``: show what a pipeline's code bundle holds before anything ships.

``usina bundle ls PIPELINE.py`` lists the files that would be packed (the project root found
from the pipeline file, ``.gitignore`` and ``.usinaignore`` applied), their sizes, the total,
the bundle's id and the git state; ``--skipped`` adds what was left out and why. Exit 2 when the
bundle would be over its size limit, with the largest files named.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from usina.bundles import (
    BundleError,
    BundleLimits,
    BundleTooLargeError,
    find_root,
    human_size,
    manifest_of,
    pack_manifest,
)
from usina.errors import DefinitionError
from usina.i18n import _, error_text

bundle_app = typer.Typer(
    help="Code bundles: what a pipeline's project ships to a cluster.", no_args_is_help=True
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

EXIT_USAGE = 2


@bundle_app.command("ls")
def ls(
    pipeline_file: Annotated[str, typer.Argument(help="the pipeline file (FILE.py[:PIPELINE])")],
    root: Annotated[
        str | None,
        typer.Option(help="project root (default: the nearest folder with pyproject.toml/.git)"),
    ] = None,
    skipped: Annotated[bool, typer.Option("--skipped", help="also list what is left out")] = False,
    max_mib: Annotated[
        float, typer.Option(help="size limit of the bundle's files, in MiB")
    ] = BundleLimits().max_bytes / (1 << 20),
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """List the files a bundle of PIPELINE_FILE's project holds, with its id and size."""
    import json

    limit = int(max_mib * (1 << 20))
    too_large: BundleTooLargeError | None = None
    digest: str | None = None
    try:
        top = find_root(pipeline_file.partition(":")[0], root)
        manifest = manifest_of(top)
        try:
            digest = pack_manifest(manifest, BundleLimits(limit, min(limit, 10 << 20))).digest
        except BundleTooLargeError as exc:
            too_large = exc
    except (DefinitionError, BundleError, OSError) as exc:
        err.print(f"usina: {error_text(exc)}", markup=False)
        raise typer.Exit(EXIT_USAGE) from exc
    if output == "json":
        data = {**manifest.to_json(), "digest": digest, "limit": limit}
        if skipped:
            data["skipped"] = [{"path": s.path, "reason": s.reason} for s in manifest.skipped]
        out.print_json(json.dumps(data))
    else:
        width = max((len(f.path) for f in manifest.files), default=0)
        for entry in manifest.files:
            out.print(f"{entry.path:<{width}}  {human_size(entry.size):>10}", markup=False)
        if skipped:
            for skip in manifest.skipped:
                out.print(
                    "{path}  {skipped}".format(
                        path=f"{skip.path:<{width}}",
                        skipped=_("skipped: {reason}").format(reason=skip.reason),
                    ),
                    markup=False,
                )
        git = ""
        if manifest.git_commit:
            dirty = _(" (dirty)") if manifest.git_dirty else ""
            git = f", git {manifest.git_commit[:12]}{dirty}"
        out.print(
            _("{files} files, {size} from {root}{git}; bundle {digest}").format(
                files=len(manifest.files),
                size=human_size(manifest.size),
                root=manifest.root,
                git=git,
                digest=digest or _("(over the limit)"),
            ),
            markup=False,
        )
    if too_large is not None:
        err.print(f"usina: {error_text(too_large)}", markup=False)
        raise typer.Exit(EXIT_USAGE)
