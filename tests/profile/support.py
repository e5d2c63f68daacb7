"""Helpers of the profile tests: run a pipeline through the real CLI and read its profiles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from usina.cli.settings import Settings
from usina.engine.profiles import AttemptProfile, load_profile
from usina.stores.artifacts import FsspecArtifactStore
from usina.stores.sql import SqlMetadataStore

if TYPE_CHECKING:
    from tests.integration.cli_helpers import Usina
    from usina.engine.records import AttemptRecord


def settings_of(usina: Usina) -> Settings:
    return Settings.from_env({"USINA_HOME": usina.env["USINA_HOME"]})


def attempts_of(usina: Usina, run_id: str) -> list[AttemptRecord]:
    store = SqlMetadataStore(settings_of(usina).database_url)
    try:
        return store.get_attempts(run_id)
    finally:
        store.close()


def profile_of(usina: Usina, attempt_id: str) -> AttemptProfile:
    return load_profile(FsspecArtifactStore(settings_of(usina).artifacts_url), attempt_id)
