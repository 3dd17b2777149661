"""/readyz: ready only when the database answers at the code's schema revision."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from quart.typing import TestClientProtocol as Client

from chat.services import Services
from chat.settings import Settings
from storage.revision import head_revision
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


async def test_ready_reports_the_schema_and_the_assistant(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert await response.get_json() == {
        "status": "ok",
        "checks": {"database": "ok", "schema": "ok"},
        "assistant": {"provider": "local"},
        "pid": os.getpid(),  # the process that answered (one of `parley serve --workers`)
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_database_behind_the_code_is_not_ready(client: Client, services: Services) -> None:
    # As if the code had been upgraded without `parley migrate`.
    await services.db.execute("DELETE FROM alembic_version")
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = await response.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"] == {
        "database": "ok",
        "schema": f"error: the database is at revision none, the code needs {head_revision()}; "
        'run "parley migrate"',
    }


@pytest.fixture(name="settings")
def fixture_settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    """As conftest's, with what a test passes by indirect parametrization."""
    return make_settings(tmp_path, database_url, **getattr(request, "param", {}))


OPENAI = {
    "assistant_provider": "openai",
    "openai_model": "support-model",
    "openai_base_url": "http://127.0.0.1:9/v1",
    "openai_api_key": "sk-test",
}


@pytest.mark.parametrize("settings", [OPENAI], indirect=True)
async def test_ready_names_the_openai_model(client: Client) -> None:
    response = await client.get("/readyz")
    assert (await response.get_json())["assistant"] == {
        "provider": "openai",
        "model": "support-model",
    }
