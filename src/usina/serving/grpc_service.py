"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService``.

Handlers take and return raw bytes and parse the messages themselves, so a request that is not
a valid protobuf gets ``INVALID_ARGUMENT`` rather than a transport's ``INTERNAL``; the transport
is :mod:`usina.serving.grpc_h2`, which maps what a handler raises with
:meth:`GrpcService.status`. The inference response is written straight to protobuf's wire format
from bytes cached per model and output (:func:`usina.serving.codec.encode_grpc_response`):
building a message object per request and per output was most of the Python work of a one-row
``ModelInfer``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf.message import DecodeError

from usina import __version__ as usina_version
from usina.serving import grpc_repository
from usina.serving.batching import PredictError
from usina.serving.codec import (
    InputTensor,
    RequestedOutput,
    assemble,
    bytes_values,
    cast,
    check_datatype,
    encode_grpc_response,
    raw_array,
    select_outputs,
)
from usina.serving.errors import (
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
)
from usina.serving.grpc_h2 import Status
from usina.serving.model import V2_TO_NUMPY
from usina.serving.proto import grpc_predict_v2_pb2 as pb
from usina.serving.rest import EXTENSIONS, SERVER_NAME

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from usina.serving.catalog import Catalog
    from usina.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"

_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
_CODES: dict[type[BaseException], Status] = {
    InvalidInputError: Status.INVALID_ARGUMENT,
    ModelNotFoundError: Status.NOT_FOUND,
    OverloadedError: Status.RESOURCE_EXHAUSTED,
    ModelNotReadyError: Status.UNAVAILABLE,
    grpc_repository.RepositoryOff: Status.UNIMPLEMENTED,
    PredictError: Status.INTERNAL,
}
_MAX_ELEMENTS = 1 << 31


def _parse(message_type: Any, data: bytes) -> Any:
    try:
        return message_type.FromString(data)
    except (DecodeError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"the request is not a valid {message_type.__name__}") from exc


def decode_tensors(request: Any) -> tuple[InputTensor, ...]:
    raw = request.raw_input_contents
    inputs = request.inputs
    if raw and len(raw) != len(inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs"
        )
    tensors = []
    for i, tensor in enumerate(inputs):
        name = tensor.name
        datatype = tensor.datatype
        if datatype not in V2_TO_NUMPY and datatype != "BYTES":
            check_datatype(name, datatype)  # raises, naming the datatypes
        shape = tuple(tensor.shape)
        if not shape or min(shape) < 0 or len(shape) > 8:
            raise InvalidInputError(f"input {name!r}: shape {list(shape)} is not valid")
        if math.prod(shape) > _MAX_ELEMENTS:
            raise InvalidInputError(f"input {name!r}: shape {list(shape)} is too large")
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInputError(
                    f"input {name!r}: set contents or raw_input_contents, not both"
                )
            data = raw_array(name, datatype, shape, raw[i])
        elif datatype == "BYTES":
            values = list(tensor.contents.bytes_contents)
            data = bytes_values(name, values, math.prod(shape), shape)
        else:
            field = _CONTENTS_FIELD.get(datatype)
            if field is None:
                raise InvalidInputError(f"input {name!r}: {datatype} needs raw_input_contents")
            values = getattr(tensor.contents, field)
            dtype = V2_TO_NUMPY[datatype]
            wide = np.array(values, dtype=np.float64 if dtype.kind == "f" else object)
            if dtype.kind in "iu" and wide.size:
                info = np.iinfo(dtype.type)  # type: ignore[type-var]
                if int(wide.min()) < info.min or int(wide.max()) > info.max:
                    raise InvalidInputError(
                        f"input {name!r}: a value is out of range for {datatype}"
                    )
            data = cast(wide, dtype)
            count = math.prod(shape)
            if data.size != count:
                raise InvalidInputError(
                    f"input {name!r}: shape {list(shape)} needs {count} values, got {data.size}"
                )
        tensors.append(InputTensor(name, datatype, shape, data))
    return tuple(tensors)


class GrpcService:
    """Implements the six OIP RPCs against the server's catalog of models."""

    def __init__(self, catalog: Catalog, metrics: ServingMetrics) -> None:
        self.catalog = catalog
        self.metrics = metrics

    def methods(self) -> dict[str, Callable[[bytes], Awaitable[bytes]]]:
        """Every RPC by its path (``/inference.GRPCInferenceService/ModelInfer``...)."""
        methods = {
            "ServerLive": self._server_live,
            "ServerReady": self._server_ready,
            "ModelReady": self._model_ready,
            "ServerMetadata": self._server_metadata,
            "ModelMetadata": self._model_metadata,
            "ModelInfer": self._model_infer,
            **grpc_repository.methods(self.catalog, _parse),
        }
        return {f"/{SERVICE}/{name}": fn for name, fn in methods.items()}

    @staticmethod
    def status(exc: BaseException) -> tuple[Status, str]:
        """The status a call ends with when its handler raised ``exc``: the serving errors'
        own, ``UNKNOWN`` for anything else (a bug: logged with its traceback)."""
        code = _CODES.get(type(exc))
        if code is not None:
            return code, str(exc)
        log.error("a gRPC handler failed", exc_info=exc)
        return Status.UNKNOWN, f"Exception calling application: {type(exc).__name__}"

    async def _server_live(self, request: bytes) -> bytes:
        _parse(pb.ServerLiveRequest, request)
        return bytes(pb.ServerLiveResponse(live=True).SerializeToString())

    async def _server_ready(self, request: bytes) -> bytes:
        _parse(pb.ServerReadyRequest, request)
        return bytes(pb.ServerReadyResponse(ready=self.catalog.ready).SerializeToString())

    async def _model_ready(self, request: bytes) -> bytes:
        req = _parse(pb.ModelReadyRequest, request)
        try:
            self.catalog.get(req.name, req.version or None)
            ready = self.catalog.entry(req.name).repository.ready
        except (ModelNotFoundError, ModelNotReadyError):
            ready = False
        return bytes(pb.ModelReadyResponse(ready=ready).SerializeToString())

    async def _server_metadata(self, request: bytes) -> bytes:
        _parse(pb.ServerMetadataRequest, request)
        return bytes(
            pb.ServerMetadataResponse(
                name=SERVER_NAME, version=usina_version, extensions=EXTENSIONS
            ).SerializeToString()
        )

    async def _model_metadata(self, request: bytes) -> bytes:
        req = _parse(pb.ModelMetadataRequest, request)
        model = self.catalog.get(req.name, req.version or None)
        meta = pb.ModelMetadataResponse.TensorMetadata
        return bytes(
            pb.ModelMetadataResponse(
                name=model.name,
                versions=[model.version],
                platform=model.platform,
                inputs=[
                    meta(name=m.name, datatype=m.datatype, shape=m.shape) for m in model.inputs
                ],
                outputs=[
                    meta(name=m.name, datatype=m.datatype, shape=m.shape) for m in model.outputs
                ],
            ).SerializeToString()
        )

    async def _model_infer(self, request: bytes) -> bytes:
        start = time.perf_counter()
        name = ""
        version = ""
        status = "OK"
        try:
            req = _parse(pb.ModelInferRequest, request)
            name = req.model_name
            model, arm = self.catalog.route(name, req.model_version or None, None)
            version = model.version
            tensors = decode_tensors(req)
            batch = assemble(model, tensors)
            requested = [RequestedOutput(o.name) for o in req.outputs] or None
            chosen = select_outputs(model, requested)
            outputs = await self.catalog.submit(model, batch, arm)
            return encode_grpc_response(model, req.id, chosen, outputs)
        except Exception as exc:
            code = _CODES.get(type(exc))
            status = code.name if code is not None else "INTERNAL"
            raise
        finally:
            self.metrics.request(name, version, "grpc", status)
            self.metrics.request_done(name, "grpc", time.perf_counter() - start)
