"""In-memory fakes of usina's Protocols, for tests (the engine's, and users' own).

Each fake passes the same contract suite as the real implementation it stands in for.
"""

from __future__ import annotations

from usina.testing.fakes import InMemoryArtifactStore, InMemoryMetadataStore

__all__ = ["InMemoryArtifactStore", "InMemoryMetadataStore"]
