"""The model repository extension over gRPC: index, load and unload, as tritonclient.grpc calls
them (``RepositoryIndex``, ``RepositoryModelLoad``, ``RepositoryModelUnload`` on
``inference.GRPCInferenceService``), with the same behaviour as REST's ``/v2/repository``.

A load may name a new model's URI in the string parameter ``model_uri``; any other parameter
(Triton's ``config``, ``file:...``) is refused with ``INVALID_ARGUMENT``, as usina does not take
model configurations or files over the wire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from usina.serving.errors import InvalidInputError, ModelLoadError
from usina.serving.proto import grpc_repository_pb2 as rpb

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from usina.serving.catalog import Catalog


class RepositoryOff(Exception):
    """The server was started without ``--repository-api``."""


def methods(
    catalog: Catalog, parse: Callable[[Any, bytes], Any]
) -> dict[str, Callable[[bytes], Awaitable[bytes]]]:
    """The three RPCs, taking and returning raw bytes like the service's other handlers."""

    def check_on() -> None:
        if not catalog.repository_api:
            raise RepositoryOff(
                "the repository API is off; start usina serve with --repository-api"
            )

    async def index(request: bytes) -> bytes:
        check_on()
        req = parse(rpb.RepositoryIndexRequest, request)
        reply = rpb.RepositoryIndexResponse()
        for item in catalog.index():
            if req.ready and item["state"] != "READY":
                continue
            reply.models.add(
                name=item["name"],
                version=str(item.get("version", "")),
                state=item["state"],
                reason=item.get("reason", ""),
            )
        return bytes(reply.SerializeToString())

    async def load(request: bytes) -> bytes:
        check_on()
        req = parse(rpb.RepositoryModelLoadRequest, request)
        uri = _model_uri(req)
        try:
            await catalog.load(req.model_name, uri)
        except ModelLoadError as exc:
            raise InvalidInputError(f"failed to load {req.model_name!r}: {exc}") from exc
        return bytes(rpb.RepositoryModelLoadResponse().SerializeToString())

    async def unload(request: bytes) -> bytes:
        check_on()
        req = parse(rpb.RepositoryModelUnloadRequest, request)
        # tritonclient always sends unload_dependents; usina has no ensembles, so no model
        # depends on another and there is nothing more to unload.
        unknown = sorted(k for k in req.parameters if k != "unload_dependents")
        if unknown:
            raise InvalidInputError(f"unsupported unload parameter(s) {', '.join(unknown)}")
        await catalog.unload(req.model_name)
        return bytes(rpb.RepositoryModelUnloadResponse().SerializeToString())

    return {
        "RepositoryIndex": index,
        "RepositoryModelLoad": load,
        "RepositoryModelUnload": unload,
    }


def _model_uri(req: Any) -> str | None:
    if not req.model_name:
        raise InvalidInputError("model_name is empty")
    unknown = sorted(k for k in req.parameters if k != "model_uri")
    if unknown:
        raise InvalidInputError(
            f"unsupported load parameter(s) {', '.join(unknown)}: usina loads a model from "
            "its URI only (the string parameter model_uri)"
        )
    if "model_uri" not in req.parameters:
        return None
    param = req.parameters["model_uri"]
    if param.WhichOneof("parameter_choice") != "string_param":
        raise InvalidInputError("the parameter model_uri must be a string")
    return str(param.string_param)
