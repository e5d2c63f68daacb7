"""Fixtures of the Kubernetes backend tests: the API emulator, settings, backends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from kubernetes import client

from tests.k8s.emulator import Emulator
from tests.k8s.support import MemoryArtifacts
from usina.backends.kubernetes.backend import KubernetesBackend
from usina.backends.kubernetes.settings import KubernetesSettings


@pytest.fixture
def settings() -> KubernetesSettings:
    return KubernetesSettings(namespace="ml", image="registry.example.com/usina:1.0")


@pytest.fixture
def artifacts() -> MemoryArtifacts:
    return MemoryArtifacts()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


def api_client(url: str) -> client.ApiClient:
    config = client.Configuration()
    config.host = url
    return client.ApiClient(config)


@pytest.fixture
def make_backend(
    emulator: Emulator, settings: KubernetesSettings, artifacts: MemoryArtifacts
) -> Iterator[Callable[..., KubernetesBackend]]:
    made: list[tuple[KubernetesBackend, client.ApiClient]] = []

    def make(**overrides: Any) -> KubernetesBackend:
        fast = replace(settings, backoff_base=0.01, backoff_max=0.1, sync_timeout=10.0, **overrides)
        api = api_client(emulator.url)
        backend = KubernetesBackend(fast, api, artifacts)
        made.append((backend, api))
        return backend

    yield make
    for backend, api in made:
        backend.close()
        api.close()
