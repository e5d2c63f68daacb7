"""Which serving-endpoint URLs the server may probe for readiness (``GET /endpoints``).

A project admin registers an endpoint's URL and every listing makes the server request it, so
an unchecked URL aims the server at itself (``127.0.0.1``), at a cloud metadata service
(``169.254.169.254``) or anywhere it can reach, and shows viewers what came back. The policy:

- loopback, link-local, unspecified and multicast addresses are refused unless
  ``GuardSettings.probe_allow_private`` is set (a developer's laptop);
- when ``GuardSettings.probe_allow`` lists hosts or networks, only those are probed;
- the host is resolved first and every address it resolves to must pass; redirects are never
  followed (a 3xx reads as not ready), so an allowed host cannot hand the probe elsewhere.

A refused URL is never requested; its listing says it was not checked and why, nothing more.
DNS that answers differently between the check and the request can still move a probe; an
allow list of networks rather than names narrows that.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import HTTPRedirectHandler, OpenerDirector, Request, build_opener

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class _NoRedirects(HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER: OpenerDirector = build_opener(_NoRedirects)


def _special(address: IPAddress) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return (
        address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
    )


@dataclass(frozen=True, slots=True)
class ProbePolicy:
    """``refusal(url)`` says why a URL may not be probed (None: it may)."""

    allow: tuple[str, ...] = ()
    allow_private: bool = False

    def _networks(self) -> list[IPNetwork]:
        found: list[IPNetwork] = []
        for item in self.allow:
            try:
                found.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                continue
        return found

    def _names(self) -> set[str]:
        names = set()
        for item in self.allow:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                names.add(item.lower().rstrip("."))
        return names

    def refusal(self, url: str) -> str | None:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        if parts.scheme not in ("http", "https") or not host:
            return "only http(s) URLs with a host are probed"
        try:
            infos = socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)
            addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
        except (OSError, ValueError):
            return f"the host {host!r} does not resolve"
        if not self.allow_private and any(_special(a) for a in addresses):
            return (
                "it names a loopback or link-local address, which this server does not probe "
                "(GuardSettings.probe_allow_private)"
            )
        if self.allow:
            networks = self._networks()
            by_name = host in self._names()
            if not by_name and not all(any(a in n for n in networks) for a in addresses):
                return "its host is not in the server's allowed list (GuardSettings.probe_allow)"
        return None


def check_ready(url: str, policy: ProbePolicy, timeout: float = 1.0) -> tuple[bool | None, str]:
    """Whether a V2 inference server answers ``GET <url>/v2/health/ready`` with 200; None
    (not checked) when ``policy`` refuses the URL."""
    refused = policy.refusal(url)
    if refused is not None:
        return None, f"not checked: {refused}"
    target = url.rstrip("/") + "/v2/health/ready"
    try:
        with _OPENER.open(Request(target, method="GET"), timeout=timeout) as reply:
            return reply.status == 200, f"HTTP {reply.status}"
    except HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except URLError as exc:
        return False, str(getattr(exc, "reason", exc))
    except (OSError, ValueError) as exc:
        return False, str(exc)
