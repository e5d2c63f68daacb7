"""Kubernetes' own naming rules, checked before a manifest is rendered: a value that breaks one
is refused with the rule it breaks, never silently rewritten into another name.

The rules are the API server's (``k8s.io/apimachinery/pkg/util/validation``): DNS-1123 labels
(namespaces, Service names), DNS-1123 subdomains (Secrets, ConfigMaps, service accounts,
priority classes, Kueue LocalQueues), label keys and values, environment variable names, and
the container image reference grammar (``[registry/]path[:tag][@digest]``). Pure functions; the
caller turns ``problems`` into a ``DefinitionError`` (the CLI's exit 2). Each problem is an
``N_`` message of ``PROBLEM_TEXTS``, formatted in English; where it is shown it reads in the
reader's language (``usina.i18n.Said``, as ``usina deploy`` does).

The artifact store a Job is given must be one its pods can reach: ``shared_artifacts_problem``
refuses a path on this machine's disk.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from usina.i18n import N_

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# The distribution reference grammar (registry host[:port], lowercase path components, an
# optional tag of up to 128 characters, an optional sha256 digest).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_HOST_PART = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = rf"{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]+)?"
IMAGE_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@sha256:[a-f0-9]{64})?$"
)
#: URL schemes whose objects every pod of a cluster can read (given credentials).
SHARED_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "http", "https")

_LABEL_LONG = N_("{field}={value!r}... is {length} characters; a DNS-1123 label has at most 63")
_LABEL = N_(
    "{field}={value!r} is not a DNS-1123 label (lowercase letters, digits and '-', starting "
    "and ending with a letter or digit)"
)
_SUBDOMAIN_LONG = N_("{field}={value!r}... has {length} characters (DNS-1123 subdomain: 253)")
_SUBDOMAIN = N_(
    "{field}={value!r} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', "
    "starting and ending with a letter or digit)"
)
_LABEL_VALUE = N_(
    "{field}={value!r} is not a valid label value (at most 63 characters of letters, digits, "
    "'-', '_' and '.', starting and ending with a letter or digit)"
)
_LABEL_KEY = N_(
    "{field} key {key!r} is not a valid label key ([prefix/]name, the name at most 63 "
    "characters of letters, digits, '-', '_' and '.')"
)
_ENV_NAME = N_(
    "{field} name {name!r} is not a valid environment variable name (letters, digits, '_', '-' "
    "and '.', not starting with a digit)"
)
_IMAGE = N_(
    "{field}={image!r} is not a container image reference "
    "([registry[:port]/]name[:tag][@sha256:digest]; lowercase name, no spaces)"
)
_LOCAL_ARTIFACTS = N_(
    "the artifact store {url!r} is a path on this machine, which the Jobs' pods cannot read; "
    "set USINA_ARTIFACTS_URL=s3://BUCKET/PREFIX (credentials from AWS_ACCESS_KEY_ID/"
    "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for a non-AWS store), or pass "
    "--allow-local-artifacts when every node mounts this path (a one-node cluster)"
)
#: Every problem these rules report, for ``usina.i18n.Said`` where one is shown.
PROBLEM_TEXTS = (
    _LABEL_LONG,
    _LABEL,
    _SUBDOMAIN_LONG,
    _SUBDOMAIN,
    _LABEL_VALUE,
    _LABEL_KEY,
    _ENV_NAME,
    _IMAGE,
    _LOCAL_ARTIFACTS,
)


def dns1123_label(field: str, value: str) -> list[str]:
    if len(value) > 63:
        return [_LABEL_LONG.format(field=field, value=value[:20], length=len(value))]
    if not DNS1123_LABEL.fullmatch(value):
        return [_LABEL.format(field=field, value=value)]
    return []


def dns1123_subdomain(field: str, value: str) -> list[str]:
    if len(value) > 253:
        return [_SUBDOMAIN_LONG.format(field=field, value=value[:20], length=len(value))]
    if not DNS1123_SUBDOMAIN.fullmatch(value):
        return [_SUBDOMAIN.format(field=field, value=value)]
    return []


def label_value(field: str, value: str) -> list[str]:
    if len(value) > 63 or not LABEL_VALUE.fullmatch(value):
        return [_LABEL_VALUE.format(field=field, value=value)]
    return []


def label_key(field: str, key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    found = []
    if prefix:
        found += dns1123_subdomain(f"{field} prefix", prefix)
    if len(name) > 63 or not LABEL_NAME.fullmatch(name):
        found.append(_LABEL_KEY.format(field=field, key=key))
    return found


def env_name(field: str, name: str) -> list[str]:
    if not ENV_NAME.fullmatch(name):
        return [_ENV_NAME.format(field=field, name=name)]
    return []


def image_reference(field: str, image: str) -> list[str]:
    if not IMAGE_REFERENCE.fullmatch(image):
        return [_IMAGE.format(field=field, image=image)]
    return []


def each(check: Callable[[str, str], list[str]], field: str, values: Iterable[str]) -> list[str]:
    """``check`` over every value."""
    return [problem for value in values for problem in check(field, value)]


def shared_artifacts_problem(url: str) -> str | None:
    """Why a Job cannot be given ``url`` as its artifact store, or None when it can."""
    scheme, sep, _ = url.partition("://")
    if sep and scheme.lower() in SHARED_SCHEMES:
        return None
    return _LOCAL_ARTIFACTS.format(url=url)
