"""A running tool service over real stdio servers: Parley's own, `mcp-server-time` from PyPI,
the stub server of these tests and one that cannot start."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from chat.settings import Settings
from chat.tools.config import configured_servers
from chat.tools.identity import derive_tools_secret
from chat.tools.service import ToolService
from chat.tools.supervisor import Timing
from tests import databases
from tests.conftest import make_settings
from tests.tools.processes import pids_with_env

ROOT = Path(__file__).resolve().parents[2]
MARKER = "PARLEY_TEST_MCP"
TIME_SERVER = str(Path(sys.executable).parent / "mcp-server-time")
# Generous: several engineers' tests share two cores, and an MCP server takes ~1-3 s to start.
TIMING = Timing(start_s=30.0, health_s=30.0, backoff_max_s=1.0)
USER, CONVERSATION = uuid.uuid4(), uuid.uuid4()


@dataclass
class Running:
    service: ToolService
    settings: Settings
    marker: str
    hang_file: Path

    def processes(self) -> set[int]:
        """Every MCP server process of this test: Parley's (by its var folder) and the rest."""
        var = str(self.settings.parley_var_dir.resolve())
        return pids_with_env(MARKER, self.marker) | pids_with_env("PARLEY_VAR_DIR", var)

    async def call(self, name: str, **arguments: Any) -> Any:
        return await self.service.call(name, arguments, user_id=USER, conversation_id=CONVERSATION)


def servers_file(folder: Path, marker: str, hang_file: Path, **extra: Any) -> Path:
    """The test servers in the common `mcpServers` shape, each marked in its environment."""
    env = {MARKER: marker}
    stub = [sys.executable, "-m", "tests.tools.stub_server"]
    servers = {
        "time": {"command": TIME_SERVER, "args": ["--local-timezone", "UTC"], "env": env},
        "stub": {
            "command": stub[0],
            "args": stub[1:],
            "env": env | {"HANG_FILE": str(hang_file)},
            "cwd": str(ROOT),
            "timeout_s": 2,
        },
        "broken": {"command": str(folder / "no-such-server"), "env": env},
        "off": {"command": TIME_SERVER, "enabled": False},
        **extra,
    }
    path = folder / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


def tool_settings(tmp_path: Path, sqlite_template: Path, **overrides: Any) -> tuple[Settings, str]:
    """Settings with the test servers configured, and the marker in their environment."""
    marker = uuid.uuid4().hex
    config = servers_file(tmp_path, marker, tmp_path / "hanging")
    settings = make_settings(
        tmp_path,
        databases.sqlite_copy(sqlite_template, tmp_path),
        mcp_config=str(config),
        **overrides,
    )
    return settings, marker


@pytest.fixture(name="running")
async def fixture_running(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Running]:
    settings, marker = tool_settings(tmp_path, sqlite_template)
    service = ToolService(
        configured_servers(settings),
        tools_secret=derive_tools_secret(settings.jwt_secret),
        call_timeout_s=10,
        timing=TIMING,
    )
    running = Running(service, settings, marker, tmp_path / "hanging")
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        try:
            yield running
        finally:
            await service.close()
            tg.cancel_scope.cancel()
    # Closing waited for every process to end: none is left, not even a zombie.
    assert running.processes() == set()
