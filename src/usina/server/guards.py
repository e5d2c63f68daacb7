"""The platform server's protective limits, as one frozen settings value: request sizes, log
streams, audit rate, token lifetime, endpoint probes and ``/metrics``.

Each bound exists because, without it, one careless or hostile caller could freeze or bloat a
server every team shares (issue #14). ``ServerSettings.guards`` carries it; ``create_app``
falls back to the defaults below, which suit a shared production server.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """Limits of the platform server.

    max_body_bytes: largest request body on any route (default 1 MiB); larger ones get 413.
    max_params_bytes: largest run parameters, as JSON (default 64 KiB); larger ones get 422.
    max_labels: most labels on one run (default 32).
    max_label_key: longest label key, in characters (default 63, as Kubernetes').
    max_label_value: longest label value, in characters (default 256).
    follow_per_token: log streams (``?follow=true``) one token holds open at once (default 8);
        one more gets 429 until one ends.
    follow_total: log streams open at once on this replica, every token together (default 256).
    follow_seconds: longest a log stream stays open (default 3600); the client reconnects.
    follow_poll: seconds between two reads of a followed log (default 0.5).
    audit_denials_per_minute: denials recorded per client address and kind each minute
        (default 30); past it they are counted and the count is written with the next entry.
    token_default_days: lifetime of tokens created without ``--expires`` (default 90 days;
        0: tokens created without it never expire).
    probe_allow: hosts or networks (``10.0.0.0/8``, ``models.internal``) the server may probe
        for endpoint readiness; empty (default): any host except the refused ones below.
    probe_allow_private: whether loopback, link-local and unspecified addresses may be probed
        (default False: a URL naming one is never fetched, so the server cannot be aimed at
        itself or a cloud metadata service).
    metrics_token: when set, ``/metrics`` answers only ``Authorization: Bearer <it>``.
    metrics_port: when set, ``/metrics`` is served only on this port (a separate listener),
        not on the API's.
    metrics_teams: the ``labels.team`` values that get their own metric series; others fold
        into ``"other"``. Empty: the first ``metrics_max_teams`` values seen keep theirs.
    metrics_max_teams: most distinct team series when ``metrics_teams`` is empty (default 20).
    """

    max_body_bytes: int = 1 << 20
    max_params_bytes: int = 64 << 10
    max_labels: int = 32
    max_label_key: int = 63
    max_label_value: int = 256
    follow_per_token: int = 8
    follow_total: int = 256
    follow_seconds: float = 3600.0
    follow_poll: float = 0.5
    audit_denials_per_minute: int = 30
    token_default_days: float = 90.0
    probe_allow: tuple[str, ...] = ()
    probe_allow_private: bool = False
    metrics_token: str | None = None
    metrics_port: int | None = None
    metrics_teams: tuple[str, ...] = ()
    metrics_max_teams: int = 20
