"""One serving process: the model, its batcher, REST on uvicorn and gRPC, in one event loop.

Both protocols share the batcher, so REST and gRPC requests are batched together. On SIGTERM or
SIGINT the process turns not-ready, stops accepting connections and RPCs, answers every request
it had accepted (within the grace period), then exits. :func:`supervise` runs several such
processes on the same ports through SO_REUSEPORT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from usina.serving.errors import ModelLoadError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from usina.serving.settings import ServeSettings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_STARTUP_FAILED = 3
_BACKLOG = 2048


def bind_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def run_worker(settings: ServeSettings) -> int:
    """Serve until signalled; the process's exit code."""
    import uvloop

    try:
        return uvloop.run(_serve(settings))
    except ModelLoadError as exc:
        log.error("cannot start serving: %s", exc)
        return EXIT_STARTUP_FAILED
    except OSError as exc:  # typically a port already in use
        log.error("cannot start serving: %s", exc)
        return EXIT_STARTUP_FAILED


async def _serve(settings: ServeSettings) -> int:
    import uvicorn

    from usina.serving.grpc_h2 import GrpcServer
    from usina.serving.grpc_service import GrpcService
    from usina.serving.metrics import ServingMetrics
    from usina.serving.rest import RestApp

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield  # this process installs its own handlers, for REST and gRPC together

    metrics = ServingMetrics(settings.metrics_dir)
    catalog = await build_catalog(settings, metrics)
    if settings.rollout is not None:
        await _add_challenger(catalog, settings, metrics)

    reuse = settings.workers > 1
    sock = bind_socket(settings.host, settings.http_port, reuse_port=reuse)
    app = RestApp(catalog, metrics, max_body_bytes=settings.max_body_bytes)
    config = uvicorn.Config(
        app,
        interface="asgi3",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_config=None,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        backlog=_BACKLOG,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=max(1, int(settings.grace_period_s)),
        h11_max_incomplete_event_size=64 * 1024,
    )
    server = _Server(config)

    grpc_server: GrpcServer | None = None
    if settings.grpc_port is not None:
        service = GrpcService(catalog, metrics)
        grpc_server = GrpcServer(
            service.methods(),
            service.status,
            max_receive=settings.max_body_bytes,
            max_send=64 * 1024 * 1024,
        )
        grpc_sock = bind_socket(settings.host, settings.grpc_port, reuse_port=reuse)
        await grpc_server.start(grpc_sock, _BACKLOG)

    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(signum: int) -> None:
        if stopping:
            return
        log.info(
            "received %s: draining (grace %.0fs)",
            signal.Signals(signum).name,
            settings.grace_period_s,
        )
        catalog.set_draining()
        server.should_exit = True
        if grpc_server is not None:
            stopping.append(loop.create_task(grpc_server.stop(settings.grace_period_s)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    for entry in catalog.entries.values():
        entry.repository.start_polling()
    log.info(
        "serving %s: REST on %s:%d%s (pid %d)",
        ", ".join(
            f"{n} version {e.repository.current.version if e.repository.current else '?'}"
            for n, e in catalog.entries.items()
        ),
        settings.host,
        settings.http_port,
        f", gRPC on {settings.host}:{settings.grpc_port}" if grpc_server is not None else "",
        os.getpid(),
    )
    await server.serve(sockets=[sock])
    for task in stopping:
        await task
    for entry in catalog.entries.values():
        await entry.repository.stop_polling()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(e.batcher.stop() for e in catalog.entries.values())),
            timeout=settings.grace_period_s,
        )
    except TimeoutError:
        log.warning("batches still running after the grace period; exiting anyway")
    log.info("stopped (pid %d)", os.getpid())
    return EXIT_OK


async def build_catalog(settings: ServeSettings, metrics: Any) -> Any:
    """Load every model given at start (the first under ``settings.name``, if set)."""
    from usina.serving.batching import Batcher
    from usina.serving.catalog import Catalog, Entry
    from usina.serving.coordination import Coordinator
    from usina.serving.loader import ModelSource
    from usina.serving.repository import ModelRepository

    coordinator = (
        Coordinator(settings.coordination_dir) if settings.coordination_dir is not None else None
    )

    def make(name: str | None, uri: str) -> Entry:
        source = ModelSource.parse(uri, settings.tracking_uri)
        served = name or source.name
        repository = ModelRepository(
            source,
            served,
            metrics,
            poll_interval_s=settings.poll_interval_s,
            predict_threads=settings.predict_threads,
            coordinator=coordinator,
        )
        return Entry(repository, Batcher(served, settings.batch, metrics))

    entries: dict[str, Entry] = {}
    for i, uri in enumerate((settings.model_uri, *settings.more_models)):
        entry = make(settings.name if i == 0 else None, uri)
        if entry.repository.name in entries:
            raise ModelLoadError(
                f"two models would be served as {entry.repository.name!r}; serve one of them "
                "under another name (--name applies to the first model)"
            )
        await entry.repository.load_initial()
        entry.batcher.start()
        entries[entry.repository.name] = entry
    if coordinator is not None:
        coordinator.join()
    return Catalog(
        entries,
        repository_api=settings.repository_api,
        make=make,
    )


async def _add_challenger(catalog: Any, settings: ServeSettings, metrics: Any) -> None:
    """Load the rollout's challenger beside the first model and start judging it."""
    from usina.serving.batching import Batcher
    from usina.serving.loader import ModelSource
    from usina.serving.repository import ModelRepository
    from usina.serving.rollout import Rollout
    from usina.tracking.rollouts import record_decision

    assert settings.rollout is not None
    name, entry = next(iter(catalog.entries.items()))
    registered = entry.repository.source
    uri = settings.challenger_uri or f"models:/{registered.name}@challenger"
    source = ModelSource.parse(uri, settings.tracking_uri)
    challenger = ModelRepository(
        source, name, metrics, poll_interval_s=0, predict_threads=settings.predict_threads
    )
    await challenger.load_initial()
    assert challenger.current is not None
    assert entry.repository.current is not None
    entry.challenger = challenger
    entry.challenger_batcher = Batcher(f"{name}:challenger", settings.batch, metrics)
    entry.challenger_batcher.start()
    entry.rollout = Rollout(
        settings.rollout,
        champion_version=entry.repository.current.version,
        challenger_version=challenger.current.version,
        clock=time.monotonic,
    )
    log.info(
        "rollout of %s (%s): champion version %s, challenger version %s (%s)",
        name,
        settings.rollout.mode,
        entry.rollout.champion_version,
        entry.rollout.challenger_version,
        uri,
    )

    def record(entry: Any, index: int, event: dict[str, Any]) -> None:
        if source.local_path is None and source.tracking_uri is not None:
            record_decision(
                source.tracking_uri, source.name, str(event["challenger_version"]), index, event
            )

    catalog.start_rollouts(metrics, record)


def supervise(settings: ServeSettings, worker_main: Callable[[ServeSettings], None]) -> int:
    """Run ``settings.workers`` processes of ``worker_main``; forward SIGTERM; restart crashes."""
    from usina.serving.coordination import strike_off
    from usina.serving.metrics import mark_worker_dead

    metrics_dir = settings.metrics_dir
    own_dir = None
    if metrics_dir is None:
        own_dir = metrics_dir = tempfile.mkdtemp(prefix="usina-serve-metrics-")
    # prometheus_client picks its multiprocess mode from the environment at import time.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    coordination = tempfile.mkdtemp(prefix="usina-serve-workers-")
    settings = replace(settings, metrics_dir=metrics_dir, coordination_dir=coordination)
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start(i: int) -> Any:
        proc = ctx.Process(target=worker_main, args=(settings,), name=f"usina-serve-{i}")
        proc.start()
        return proc

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    procs = [start(i) for i in range(settings.workers)]
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = EXIT_OK
    restarts: list[float] = []
    try:
        while any(p.is_alive() for p in procs) or not stopping:
            for i, proc in enumerate(procs):
                proc.join(timeout=0.1)
                if proc.is_alive() or stopping:
                    continue
                if proc.pid is not None:
                    mark_worker_dead(metrics_dir, proc.pid)
                    strike_off(coordination, proc.pid)
                if proc.exitcode == EXIT_STARTUP_FAILED:
                    log.error("worker %d could not start; stopping", i)
                    code = EXIT_STARTUP_FAILED
                    on_signal(signal.SIGTERM, None)
                    break
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > 5 * settings.workers:
                    log.error("workers keep dying (last exit code %s); stopping", proc.exitcode)
                    code = 1
                    on_signal(signal.SIGTERM, None)
                    break
                log.warning("worker %d exited with %s; restarting it", i, proc.exitcode)
                procs[i] = start(i)
            if stopping:
                deadline = time.monotonic() + settings.grace_period_s + 10
                for proc in procs:
                    proc.join(timeout=max(0.0, deadline - time.monotonic()))
                    if proc.is_alive():
                        proc.kill()
                        proc.join()
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
        shutil.rmtree(coordination, ignore_errors=True)
    return code
