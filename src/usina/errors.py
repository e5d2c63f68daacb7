"""The one exception tree of usina.

::

    UsinaError
    ├── DefinitionError        a pipeline or step is defined wrongly; nothing ran (CLI exit 2)
    ├── ParameterError         a pipeline parameter is unknown or has the wrong type (exit 2)
    ├── NotFoundError          a run, step, attempt or artifact does not exist
    ├── StateError             the operation does not fit the object's state (resume a running run)
    ├── StoreError             the metadata or artifact store failed
    │   └── ArtifactMissingError   an artifact's bytes are gone or do not match their hash
    │       └── ArtifactCorruptError   its bytes do not match their sha256 (never used)
    ├── SerializationError     a step's value cannot be written or read as an artifact
    ├── BackendError           a backend could not launch, observe or cancel an attempt
    ├── DeployError            the Helm chart could not be rendered, or its objects applied
    ├── BundleError            a code bundle could not be packed, fetched or unpacked
    │   ├── BundleTooLargeError    over the size limit (also a DefinitionError: exit 2)
    │   ├── BundleIntegrityError   its bytes do not match their sha256 (also ArtifactMissingError)
    │   └── UnsafeBundleError      an entry would land outside its folder, or is a link
    └── MissingExtraError      an optional dependency is not installed (names the pip line)

Adapters map their native errors into this tree with ``raise ... from exc``.
"""

from __future__ import annotations


class UsinaError(Exception):
    """Base of every error usina raises on purpose."""


class DefinitionError(UsinaError):
    """A pipeline or step definition is wrong. Raised before anything runs."""


class ParameterError(DefinitionError):
    """A pipeline parameter is unknown, missing, or of the wrong type."""


class NotFoundError(UsinaError):
    """A run, step, attempt or artifact that was asked for does not exist."""


class StateError(UsinaError):
    """The operation does not fit the current state of the object."""


class StoreError(UsinaError):
    """The metadata or artifact store failed."""


class ArtifactMissingError(StoreError):
    """An artifact's content is missing or does not match its hash."""


class ArtifactCorruptError(ArtifactMissingError):
    """An artifact's stored bytes do not hash to its digest. The store moved them aside, so the
    artifact is missing from now on and its producer must run again; ``digest`` names it."""

    def __init__(self, message: str, digest: str) -> None:
        super().__init__(message)
        self.digest = digest

    def __reduce__(self) -> tuple[type[ArtifactCorruptError], tuple[str, str]]:
        return (type(self), (str(self), self.digest))


class SerializationError(UsinaError):
    """A value cannot be written as, or read from, an artifact."""


class BackendError(UsinaError):
    """A backend could not launch, observe or cancel an attempt."""


class DeployError(UsinaError):
    """The Helm chart could not be rendered, or its objects could not be applied."""


class MissingExtraError(UsinaError):
    """An optional dependency is missing; the message names the install line."""

    def __init__(self, module: str, extra: str) -> None:
        from usina.i18n import N_, mark

        said = N_("{module!r} is not installed; install it with: pip install 'usina[{extra}]'")
        super().__init__(said.format(module=module, extra=extra))
        mark(self, said, {"module": module, "extra": extra})
        self.module = module
        self.extra = extra
