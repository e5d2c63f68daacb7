"""The Open Inference Protocol over REST, as a bare ASGI application.

No framework on the hot path: the path is split once, the body read with a size limit, and the
response written with orjson. Run under uvicorn with httptools and uvloop (see ``worker``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from usina import __version__ as usina_version
from usina.serving.batching import PredictError
from usina.serving.codec import assemble, encode_rest, error_body, parse_rest, select_outputs
from usina.serving.errors import (
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
)
from usina.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from usina.serving.catalog import Catalog
    from usina.serving.metrics import ServingMetrics
    from usina.serving.model import LoadedModel, TensorMeta

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)

SERVER_NAME = "usina"
EXTENSIONS = ["binary_tensor_data"]
_JSON = b"application/json"
_OCTET = b"application/octet-stream"
_HEADER_LENGTH = b"inference-header-content-length"
_ROUTE = b"x-usina-route"  # which arm of a rollout answered: champion or challenger


def tensor_json(meta: TensorMeta) -> dict[str, Any]:
    return {"name": meta.name, "datatype": meta.datatype, "shape": list(meta.shape)}


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": model.platform,
        "inputs": [tensor_json(m) for m in model.inputs],
        "outputs": [tensor_json(m) for m in model.outputs],
    }


def _triton_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _config_tensor(meta: TensorMeta) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": meta.name,
        "data_type": _triton_type(meta.datatype),
        "dims": list(meta.dims) or [1],
    }
    if meta.optional:
        entry["optional"] = True
    return entry


def model_config(model: LoadedModel, max_batch_size: int, max_wait_s: float) -> dict[str, Any]:
    """The model's configuration in Triton's terms (``GET /v2/models/{m}/config``), so that
    ``tritonclient``'s ``get_model_config`` works: dims leave out the batch dimension."""
    return {
        "name": model.name,
        "platform": model.platform,
        "backend": model.flavour,
        "version_policy": {"specific": {"versions": [model.version]}},
        "max_batch_size": max_batch_size,
        "input": [_config_tensor(m) for m in model.inputs],
        "output": [_config_tensor(m) for m in model.outputs],
        "dynamic_batching": {"max_queue_delay_microseconds": int(max_wait_s * 1e6)},
        "parameters": {"usina_layout": {"string_value": model.layout.value}},
    }


class _BodyTooLarge(Exception):
    pass


class RestApp:
    """ASGI app serving the V2 REST paths and ``/metrics``."""

    def __init__(self, catalog: Catalog, metrics: ServingMetrics, *, max_body_bytes: int) -> None:
        self.catalog = catalog
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._server_meta = orjson.dumps(
            {"name": SERVER_NAME, "version": usina_version, "extensions": EXTENSIONS}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        parts = path.rstrip("/").split("/")
        try:
            if (
                len(parts) >= 5
                and parts[1] == "v2"
                and parts[2] == "models"
                and parts[-1] == "infer"
            ):
                if method != "POST":
                    await _respond(send, 405, error_body(f"{method} {path}: use POST"))
                    return
                await self._infer(scope, receive, send, parts)
                return
            if len(parts) >= 3 and parts[1] == "v2" and parts[2] == "repository":
                await self._repository(scope, receive, send, method, parts)
                return
            if method not in ("GET", "HEAD"):
                await _respond(send, 405, error_body(f"{method} {path}: use GET"))
                return
            await self._get(send, path, parts)
        except Exception:  # the last guard: log, answer 500, keep serving
            log.exception("unhandled error on %s %s", method, path)
            await _respond(send, 500, error_body("internal server error; see the server log"))

    async def _get(self, send: Send, path: str, parts: list[str]) -> None:
        repo = self.catalog
        if path == "/v2/health/live":
            await _respond(send, 200, b'{"live":true}')
        elif path == "/v2/health/ready":
            ready = repo.ready
            await _respond(send, 200 if ready else 503, orjson.dumps({"ready": ready}))
        elif path in ("/v2", "/v2/"):
            await _respond(send, 200, self._server_meta)
        elif path == "/metrics":
            await _respond(send, 200, self.metrics.render(), METRICS_CONTENT_TYPE.encode())
        elif len(parts) >= 4 and parts[1] == "v2" and parts[2] == "models":
            name, version, rest = _model_path(parts)
            if rest not in ("", "ready", "config", "rollout"):
                await _respond(send, 404, error_body(f"no such path {path!r}"))
                return
            try:
                model = repo.get(name, version)
            except ModelNotFoundError as exc:
                await _respond(send, 404, error_body(str(exc)))
                return
            except ModelNotReadyError as exc:
                if rest == "ready":
                    await _respond(send, 503, orjson.dumps({"name": name, "ready": False}))
                else:
                    await _respond(send, 503, error_body(str(exc)))
                return
            if rest == "ready":
                ready = repo.entry(name).repository.ready
                body = orjson.dumps({"name": name, "ready": ready})
                await _respond(send, 200 if ready else 503, body)
            elif rest == "rollout":
                await _respond(send, 200, orjson.dumps(repo.rollout_status(name)))
            elif rest == "config":
                batcher = repo.entry(name).batcher
                config = model_config(model, batcher.max_rows, batcher.max_wait)
                await _respond(send, 200, orjson.dumps(config))
            else:
                await _respond(send, 200, orjson.dumps(model_metadata(model)))
        else:
            await _respond(send, 404, error_body(f"no such path {path!r}"))

    async def _infer(self, scope: Scope, receive: Receive, send: Send, parts: list[str]) -> None:
        start = time.perf_counter()
        name, version, _ = _model_path(parts[:-1])
        model_version = ""
        status = 200
        try:
            route_header = self.catalog.route_header(name)
            route_key = None
            header_length = None
            for key, value in scope["headers"]:
                if key == route_header:
                    route_key = value.decode("latin-1")
                elif key == _HEADER_LENGTH:
                    try:
                        header_length = int(value)
                    except ValueError:
                        raise InvalidInputError(
                            "Inference-Header-Content-Length must be an integer"
                        ) from None
            model, arm = self.catalog.route(name, version, route_key)
            model_version = model.version
            body = await self._read_body(scope, receive)
            if body is None:
                return  # the client went away
            request = parse_rest(body, header_length)
            batch = assemble(model, request.inputs)
            chosen = select_outputs(model, request.outputs)
            outputs = await self.catalog.submit(model, batch, arm)
            payload, json_length = encode_rest(
                model, request.id, chosen, outputs, request.binary_output
            )
            routed = ((_ROUTE, arm.value.encode()),)
            if json_length is None:
                await _respond(send, 200, payload, headers=routed)
            else:
                await _respond(
                    send,
                    200,
                    payload,
                    _OCTET,
                    ((b"inference-header-content-length", str(json_length).encode()), *routed),
                )
        except InvalidInputError as exc:
            status = 400
            await _respond(send, 400, error_body(str(exc)))
        except _BodyTooLarge:
            status = 400
            await _respond(
                send,
                400,
                error_body(f"the body is larger than the limit of {self.max_body_bytes} bytes"),
            )
        except ModelNotFoundError as exc:
            status = 404
            await _respond(send, 404, error_body(str(exc)))
        except (OverloadedError, ModelNotReadyError) as exc:
            status = 503
            await _respond(send, 503, error_body(str(exc)), headers=((b"retry-after", b"1"),))
        except PredictError as exc:
            status = 500
            await _respond(send, 500, error_body(str(exc)))
        finally:
            self.metrics.request(
                name, model_version, "rest", _STATUS_TEXT.get(status) or str(status)
            )
            self.metrics.request_done(name, "rest", time.perf_counter() - start)

    async def _repository(
        self, scope: Scope, receive: Receive, send: Send, method: str, parts: list[str]
    ) -> None:
        """The repository extension: POST index, models/NAME/load, models/NAME/unload."""
        if not self.catalog.repository_api:
            await _respond(
                send,
                404,
                error_body("the repository API is off; start usina serve with --repository-api"),
            )
            return
        if method != "POST":
            await _respond(send, 405, error_body(f"{method} {scope['path']}: use POST"))
            return
        if parts[3:] == ["index"]:
            await _respond(send, 200, orjson.dumps(self.catalog.index()))
            return
        if len(parts) != 6 or parts[3] != "models" or parts[5] not in ("load", "unload"):
            await _respond(send, 404, error_body(f"no such path {scope['path']!r}"))
            return
        name, action = parts[4], parts[5]
        try:
            body = await self._read_body(scope, receive)
            model_uri = _load_uri(body or b"")
            if action == "load":
                await self.catalog.load(name, model_uri)
            else:
                await self.catalog.unload(name)
        except InvalidInputError as exc:
            await _respond(send, 400, error_body(str(exc)))
        except _BodyTooLarge:
            await _respond(send, 400, error_body("the body is too large"))
        except ModelNotFoundError as exc:
            await _respond(send, 404, error_body(str(exc)))
        except ModelLoadError as exc:
            await _respond(send, 400, error_body(f"failed to load {name!r}: {exc}"))
        else:
            await _respond(send, 200, b"{}")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        limit = self.max_body_bytes
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    if int(value) > limit:
                        raise _BodyTooLarge
                except ValueError:
                    raise InvalidInputError("Content-Length must be an integer") from None
        message = await receive()
        if message["type"] != "http.request":
            return None
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                raise _BodyTooLarge
            return body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _load_uri(body: bytes) -> str | None:
    """``parameters.model_uri`` of a load request, if any."""
    if not body.strip():
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the body is not valid JSON: {exc}") from exc
    params = doc.get("parameters") if isinstance(doc, dict) else None
    uri = params.get("model_uri") if isinstance(params, dict) else None
    if uri is not None and not isinstance(uri, str):
        raise InvalidInputError("parameters.model_uri must be a string")
    return uri


_STATUS_TEXT = {200: "200", 400: "400", 404: "404", 500: "500", 503: "503"}


def _model_path(parts: list[str]) -> tuple[str, str | None, str]:
    """``['', 'v2', 'models', NAME, ('versions', V), REST...]`` -> (name, version, rest)."""
    name = parts[3]
    rest = parts[4:]
    version = None
    if len(rest) >= 2 and rest[0] == "versions":
        version = rest[1]
        rest = rest[2:]
    return name, version, "/".join(rest)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = _JSON,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
