"""Errors of the serving data plane, each mapped to one REST status and one gRPC code.

::

    UsinaError
    ├── InvalidInputError (also ValueError)   the request is malformed -> 400 / INVALID_ARGUMENT
    ├── NotFoundError
    │   └── ModelNotFoundError    no such model or version is served -> 404 / NOT_FOUND
    ├── OverloadedError           the queue is full; retry later -> 503 / RESOURCE_EXHAUSTED
    ├── ModelNotReadyError        no version loaded yet, or draining -> 503 / UNAVAILABLE
    └── ModelLoadError            a model could not be loaded from its URI
"""

from __future__ import annotations

from usina.errors import NotFoundError, UsinaError


class InvalidInputError(UsinaError, ValueError):
    """The inference request is malformed; the message says what and where."""


class ModelNotFoundError(NotFoundError):
    """No model, or no such version of it, is served here."""


class OverloadedError(UsinaError):
    """The model's queue is full; the request was refused without waiting."""


class ModelNotReadyError(UsinaError):
    """The model has no version loaded yet, or the server is draining."""


class ModelLoadError(UsinaError):
    """A model could not be resolved, downloaded or loaded from its URI."""
