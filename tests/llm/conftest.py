"""Fixtures: one tiny checkpoint per session, and live servers over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.llm.llm_support import make_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("tiny-llama"))
