"""The OpenAI-compatible HTTP API over the engine: an ASGI app (Starlette).

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with
``stream: true`` as server-sent events ending in ``data: [DONE]``), ``POST /v1/embeddings``
(mean-pooled last hidden states, L2-normalised), ``GET /health`` (the engine thread is alive),
``GET /metrics``. Errors always have OpenAI's shape, ``{"error": {message, type, param, code}}``,
with a real 4xx/5xx status. A client that disconnects cancels its sequence, which frees the
batch slot at the next decode step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from usina.llm.engine import BadRequest, Engine, Event, Finished, Overloaded, TokenEvent
from usina.llm.sampling import SamplingParams
from usina.llm.schemas import ChatRequest, CompletionRequest, EmbeddingRequest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine

    from starlette.requests import Request

    from usina.llm.engine import Sequence
    from usina.llm.metrics import LLMMetrics

log = logging.getLogger(__name__)
_DISCONNECT_POLL_S = 0.25


def error(
    status: int, message: str, kind: str, *, param: str | None = None, **headers: str
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers or None)


class _Mailbox:
    """Events from the engine thread to one event loop, delivered in bulk: a decode step of 32
    sequences wakes the loop once, not 32 times."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Queue[Event], Event]] = []
        self._scheduled = False

    def post(self, queue: asyncio.Queue[Event], event: Event) -> None:
        with self._lock:
            self._pending.append((queue, event))
            if self._scheduled:
                return
            self._scheduled = True
        self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            items, self._pending, self._scheduled = self._pending, [], False
        for queue, event in items:
            queue.put_nowait(event)


_MAILBOXES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = (
    weakref.WeakKeyDictionary()
)


class _Output:
    """A sequence's events, moved from the engine thread onto the request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        mailbox = _MAILBOXES.get(loop)
        if mailbox is None:
            mailbox = _MAILBOXES[loop] = _Mailbox(loop)
        self.mailbox = mailbox
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def sink(self, event: Event) -> None:
        self.mailbox.post(self.queue, event)


class LLMApp:
    """The routes, bound to one engine, tokenizer and metrics."""

    def __init__(self, engine: Engine, metrics: LLMMetrics, api_key: str | None = None) -> None:
        self.engine = engine
        self.lm = engine.lm
        self.metrics = metrics
        self.api_key = api_key
        self.created = int(time.time())

    def swap(self, engine: Engine) -> Engine:
        """Send new requests to ``engine``; returns the old one (to drain)."""
        old, self.engine, self.lm = self.engine, engine, engine.lm
        return old

    # -- plumbing ---------------------------------------------------------------------------

    def _count(self, endpoint: str, status: int) -> None:
        self.metrics.requests.labels(self.lm.name, endpoint, str(status)).inc()

    def _denied(self, request: Request) -> JSONResponse | None:
        if self.api_key is None:
            return None
        header = request.headers.get("authorization", "")
        if header == f"Bearer {self.api_key}":
            return None
        return error(
            401,
            "missing or wrong API key: send 'Authorization: Bearer <key>' (the server's --api-key)",
            "authentication_error",
            **{"WWW-Authenticate": "Bearer"},
        )

    async def _body(self, request: Request, kind: type[BaseModel]) -> Any:
        try:
            raw = await request.json()
        except ValueError:
            return error(400, "the body is not JSON", "invalid_request_error")
        try:
            body = kind.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return error(400, f"{where}: {first['msg']}", "invalid_request_error", param=where)
        model = getattr(body, "model", None)
        if model != self.lm.name:
            return error(
                404,
                f"model {model!r} is not served here; this server serves {self.lm.name!r}",
                "invalid_request_error",
                param="model",
            )
        return body

    def _submit(
        self, prompt_ids: list[int], body: Any, max_tokens: int | None, output: _Output
    ) -> Sequence:
        params = SamplingParams(
            max_tokens=max_tokens or 0,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stops(),
            seed=body.seed,
            ignore_eos=body.ignore_eos,
        )
        return self.engine.submit(prompt_ids, params, output.sink, max_tokens=max_tokens)

    @staticmethod
    def _refusal(exc: Exception) -> JSONResponse:
        if isinstance(exc, Overloaded):
            return error(429, str(exc), "rate_limit_error", **{"Retry-After": str(exc.retry_after)})
        return error(400, str(exc), "invalid_request_error")

    # -- routes -----------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        card = {
            "id": self.lm.name,
            "object": "model",
            "created": self.created,
            "owned_by": "usina",
            "root": f"{self.lm.name}/{self.lm.version}",
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def health(self, request: Request) -> Response:
        thread = self.engine._thread
        alive = thread is not None and thread.is_alive()
        return Response("ok" if alive else "engine stopped", status_code=200 if alive else 503)

    async def metrics_route(self, request: Request) -> Response:
        from usina.llm.metrics import CONTENT_TYPE

        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def completions(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            self._count("completions", 401)
            return denied
        body = await self._body(request, CompletionRequest)
        if isinstance(body, Response):
            self._count("completions", body.status_code)
            return body
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            self._count("completions", 400)
            return error(
                400, "send one prompt per request", "invalid_request_error", param="prompt"
            )
        ids = self.lm.tokenizer(prompts[0])["input_ids"]
        return await self._generate(request, "completions", ids, body, body.max_tokens, chat=False)

    async def chat(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            self._count("chat", 401)
            return denied
        body = await self._body(request, ChatRequest)
        if isinstance(body, Response):
            self._count("chat", body.status_code)
            return body
        if not getattr(self.lm.tokenizer, "chat_template", None):
            self._count("chat", 400)
            return error(
                400,
                f"model {self.lm.name!r} has no chat template; use /v1/completions",
                "invalid_request_error",
            )
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        text = self.lm.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        ids = self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        limit = body.max_completion_tokens or body.max_tokens
        return await self._generate(request, "chat", ids, body, limit, chat=True)

    async def embeddings(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            self._count("embeddings", 401)
            return denied
        body = await self._body(request, EmbeddingRequest)
        if isinstance(body, Response):
            self._count("embeddings", body.status_code)
            return body
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or len(texts) > 256:
            self._count("embeddings", 400)
            return error(400, "input: send 1 to 256 texts", "invalid_request_error", param="input")
        future = self.engine.run_job(lambda: embed(self.lm, texts))
        vectors, tokens = await asyncio.wrap_future(future)
        self._count("embeddings", 200)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": self.lm.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # -- generation -------------------------------------------------------------------------

    async def _generate(
        self,
        request: Request,
        endpoint: str,
        ids: list[int],
        body: Any,
        max_tokens: int | None,
        *,
        chat: bool,
    ) -> Response:
        output = _Output(asyncio.get_running_loop())
        try:
            seq = self._submit(list(ids), body, max_tokens, output)
        except (BadRequest, Overloaded) as exc:
            response = self._refusal(exc)
            self._count(endpoint, response.status_code)
            return response
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            stream = self._stream(seq, output, rid, chat=chat, include_usage=include_usage)
            return StreamingResponse(
                stream,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        parts: list[str] = []
        try:
            while True:
                try:
                    event = await asyncio.wait_for(output.queue.get(), _DISCONNECT_POLL_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        seq.cancel()
                        self._count(endpoint, 499)
                        return Response(status_code=499)
                    continue
                if isinstance(event, TokenEvent):
                    parts.append(event.text)
                    continue
                break
        except asyncio.CancelledError:
            seq.cancel()
            raise
        if event.reason == "error":
            self._count(endpoint, 500)
            return error(500, f"generation failed: {event.error}", "server_error")
        self._count(endpoint, 200)
        text = "".join(parts)
        choice: dict[str, Any]
        if chat:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": event.reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": event.reason}
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": self.lm.name,
                "choices": [choice],
                "usage": _usage(event),
            }
        )

    async def _stream(
        self, seq: Sequence, output: _Output, rid: str, *, chat: bool, include_usage: bool
    ) -> AsyncIterator[str]:
        endpoint = "chat" if chat else "completions"
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text: str | None, finish: str | None, *, role: bool = False) -> str:
            choice: dict[str, Any]
            if chat:
                delta: dict[str, Any] = {"role": "assistant"} if role else {}
                if text is not None:
                    delta["content"] = text
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            payload: dict[str, Any] = {
                "id": rid,
                "object": kind,
                "created": created,
                "model": self.lm.name,
                "choices": [choice],
            }
            if include_usage:
                payload["usage"] = None
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        finished = False
        try:
            if chat:
                yield chunk("", None, role=True)
            while True:
                event = await output.queue.get()
                if isinstance(event, TokenEvent):
                    # Under load several tokens wait here: one chunk carries them all, so the
                    # per-chunk cost (JSON, a write) does not grow with the batch.
                    text = [event.text]
                    while not output.queue.empty():
                        head = output.queue.get_nowait()
                        if not isinstance(head, TokenEvent):
                            output.queue.put_nowait(head)  # nothing follows a Finished
                            break
                        text.append(head.text)
                    if joined := "".join(text):
                        yield chunk(joined, None)
                    continue
                finished = True
                if event.reason == "error":
                    self._count(endpoint, 500)
                    err = {"message": f"generation failed: {event.error}", "type": "server_error"}
                    yield f"data: {json.dumps({'error': err})}\n\n"
                    return
                yield chunk(None if chat else "", event.reason)
                if include_usage:
                    usage = {
                        "id": rid,
                        "object": kind,
                        "created": created,
                        "model": self.lm.name,
                        "choices": [],
                        "usage": _usage(event),
                    }
                    yield f"data: {json.dumps(usage)}\n\n"
                yield "data: [DONE]\n\n"
                self._count(endpoint, 200)
                return
        finally:
            if not finished:  # the client went away (or the server is stopping)
                seq.cancel()
                self._count(endpoint, 499)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics_route, methods=["GET"]),
        ]


def _usage(event: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "total_tokens": event.prompt_tokens + event.completion_tokens,
    }


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    """``base64`` is little-endian float32 bytes (what the openai client asks for by default)."""
    if encoding == "float":
        return vector
    import base64
    import struct

    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def embed(lm: Any, texts: list[str]) -> tuple[list[list[float]], int]:
    """Mean of the last hidden states over real tokens, L2-normalised (engine thread)."""
    import torch

    enc = lm.tokenizer(
        texts, padding=True, truncation=True, max_length=lm.max_len, return_tensors="pt"
    )
    with torch.inference_mode():
        out = lm.model(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            output_hidden_states=True,
        )
    hidden = out.hidden_states[-1]
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return pooled.tolist(), int(enc["attention_mask"].sum())


def create_app(
    engine: Engine,
    metrics: LLMMetrics,
    *,
    api_key: str | None = None,
    manage: bool = True,
    follow: Callable[[LLMApp], Coroutine[Any, Any, None]] | None = None,
) -> Starlette:
    """The ASGI app; with ``manage`` its lifespan starts and stops the engine thread, and
    runs ``follow`` (the alias poller) while the app serves."""
    api = LLMApp(engine, metrics, api_key)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task: asyncio.Task[None] | None = None
        if manage:
            engine.start()
            if follow is not None:
                task = asyncio.create_task(follow(api))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if manage:
                await asyncio.to_thread(api.engine.stop)

    app = Starlette(routes=api.routes(), lifespan=lifespan)
    app.state.llm = api
    return app


async def follow_alias(
    api: LLMApp,
    settings: Any,
    version: str,
    on_loaded: Callable[[Any], None] | None = None,
) -> None:
    """Poll the alias; when it moves, load the new version, switch, drain the old one. A
    version that fails to load is logged and retried at the next poll; the old one serves."""
    from usina.llm import loader

    while True:
        await asyncio.sleep(settings.poll_interval_s)
        try:
            now = await asyncio.to_thread(
                loader.current_version, settings.model_uri, settings.tracking_uri
            )
        except Exception as exc:
            log.warning(
                "cannot resolve %s: %s (still serving v%s)", settings.model_uri, exc, version
            )
            continue
        if now == version:
            continue
        name = api.lm.name
        pinned = f"models:/{settings.model_uri[len('models:/') :].split('@')[0]}/{now}"
        try:
            resolved = await asyncio.to_thread(loader.resolve, pinned, settings.tracking_uri)
            lm = await asyncio.to_thread(loader.load, resolved, name)
            if on_loaded is not None:
                on_loaded(lm)
        except Exception:
            log.exception("version %s of %s failed to load; v%s keeps serving", now, name, version)
            continue
        fresh = Engine(lm, settings.scheduler, api.metrics)
        fresh.start()
        old = api.swap(fresh)
        log.info("%s: switched from v%s to v%s", name, version, now)
        version = now
        await asyncio.to_thread(old.drain, settings.drain_timeout_s)


def build(settings: Any, on_loaded: Callable[[Any], None] | None = None) -> Starlette:
    """Load the model named by ``settings`` (an :class:`LLMSettings`) and build the app."""
    import functools

    import torch

    from usina.llm import loader
    from usina.llm.metrics import LLMMetrics

    torch.set_num_threads(settings.torch_threads)
    resolved = loader.resolve(settings.model_uri, settings.tracking_uri)
    lm = loader.load(resolved, settings.name)
    if on_loaded is not None:
        on_loaded(lm)
    metrics = LLMMetrics(lm.name)
    engine = Engine(lm, settings.scheduler, metrics)
    follow = None
    if settings.poll_interval_s > 0 and loader.follows_alias(settings.model_uri):
        follow = functools.partial(
            follow_alias, settings=settings, version=resolved.version, on_loaded=on_loaded
        )
    return create_app(engine, metrics, api_key=settings.api_key, follow=follow)
