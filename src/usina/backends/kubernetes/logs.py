"""An attempt's log record, assembled from its pods' logs as the Kubernetes backend copies them.

One pod: its log. Pods replaced after a disruption: each earlier pod's log, then a
``==> pod NAME <==`` header and the next pod's. A gang: every pod's section, node 0 (rank 0)
first, under ``==> pod NAME (node I: ranks A-B) <==``; a pod's section is replaced each time its
log is copied again. Pure functions over bytes: the backend reads and writes the record.
"""

from __future__ import annotations

import re

#: The header of one pod's part of a gang's log record.
SECTION = re.compile(r"^==> pod (?P<pod>\S+) \(node (?P<index>\d+)[^\n]*<==\n", re.MULTILINE)


def merge_pod_log(previous: bytes, pod: str, text: str, *, several: bool) -> bytes:
    """The record with ``pod``'s log as its last part; ``several``: the Job has had more
    than one pod (else the record is just this log)."""
    if not several:
        return text.encode()
    marker = f"==> pod {pod} <==\n".encode()
    if marker in previous:
        previous = previous[: previous.index(marker)]
    return previous + marker + text.encode()


def merge_gang_log(
    previous: bytes, pod: str, index: int, text: str, gang: tuple[int, int] | None
) -> bytes:
    """The gang's record with the section of ``pod`` (node ``index``) replaced by ``text``;
    ``gang`` is ``(nodes, procs_per_node)`` when known (the header then names the ranks)."""
    before = previous.decode("utf-8", "replace")
    parts: dict[str, tuple[int, str, str]] = {}  # pod -> (index, header, text)
    found = list(SECTION.finditer(before))
    for i, match in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(before)
        parts[match["pod"]] = (int(match["index"]), match.group(0), before[match.end() : end])
    ranks = ""
    if gang is not None:
        per_node = gang[1]
        first, last = index * per_node, (index + 1) * per_node - 1
        ranks = f": rank {first}" if first == last else f": ranks {first}-{last}"
    body = text if text.endswith("\n") or not text else text + "\n"
    parts[pod] = (index, f"==> pod {pod} (node {index}{ranks}) <==\n", body)
    ordered = sorted(parts.items(), key=lambda kv: (kv[1][0], kv[0]))
    return "".join(header + part for _, (_, header, part) in ordered).encode()


def log_tail(text: str | None, lines: int) -> str | None:
    """The last ``lines`` lines of a log (None for no log or an empty one)."""
    if not text:
        return None
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
