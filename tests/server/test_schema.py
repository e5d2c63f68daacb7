"""Schemathesis over the server's OpenAPI schema, authorised as an editor: no 5xx, every
status code and content type documented, every body as the schema says."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server.conftest import write_pipelines
from usina.server.app import create_app
from usina.server.context import ServerContext
from usina.server.settings import ReconcilerSettings, ServerSettings
from usina.stores.platform import Role

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("schema")
    pipelines = write_pipelines(home)
    ctx = ServerContext.open(
        ServerSettings(
            database_url=f"sqlite:///{home}/usina.db",
            artifacts_url=str(home / "artifacts"),
            attempts_dir=str(home / "attempts"),
            pipelines=(str(pipelines),),
            registry_uri=None,
            reconciler=ReconcilerSettings(enabled=False),
        )
    )
    editor, _ = ctx.platform.create_token("fuzz", {"default": Role.EDITOR})
    # Something to find: a run of each pipeline in the editor's project.
    for name in ("demo", "failing"):
        ctx.engine.submit(ctx.pipelines.get(name).compile({}), project="default")
    app = create_app(ctx, manage=False)
    try:
        yield app, editor
    finally:
        ctx.close()


def test_the_api_keeps_its_schema(served):
    # Each operation gets its own Hypothesis run (schemathesis' pytest plugin is not used:
    # its lazy loader does not work with this pytest).
    app, editor = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {editor}"}
    tried = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case):
            case.call_and_validate(headers=headers, checks=CHECKS)

        check()
        tried.append(operation.label)
    assert len(tried) >= 20, tried
