"""Fixtures of the Kubernetes backend tests."""

from __future__ import annotations

import pytest

from tests.k8s.support import MemoryArtifacts
from usina.backends.kubernetes.settings import KubernetesSettings


@pytest.fixture
def settings() -> KubernetesSettings:
    return KubernetesSettings(namespace="ml", image="registry.example.com/usina:1.0")


@pytest.fixture
def artifacts() -> MemoryArtifacts:
    return MemoryArtifacts()
