"""The composition root owns the tool service: a cancelled Parley leaves no MCP process."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from chat.root import running_services
from tests.tools.conftest import CONVERSATION, MARKER, USER, tool_settings
from tests.tools.processes import pids_with_env, wait_until

pytestmark = pytest.mark.anyio


async def test_parley_cancelled_during_a_tool_call_leaves_no_mcp_process(
    tmp_path: Path, sqlite_template: Path
) -> None:
    settings, marker = tool_settings(tmp_path, sqlite_template)
    var = str(settings.parley_var_dir.resolve())

    def processes() -> set[int]:
        return pids_with_env(MARKER, marker) | pids_with_env("PARLEY_VAR_DIR", var)

    with anyio.CancelScope() as parley:
        async with running_services(settings) as services:
            assert services.tools is not None
            tools = services.tools
            assert {s.name for s in await tools.specs()} >= {"parley__search_knowledge_base"}

            async def hang() -> None:
                await tools.call("stub__hang", {}, user_id=USER, conversation_id=CONVERSATION)

            async with anyio.create_task_group() as tg:
                tg.start_soon(hang)
                await wait_until((tmp_path / "hanging").exists)
                assert len(processes()) == 3  # parley, time, stub
                # Parley is cancelled from outside while the call is in flight.
                parley.cancel()
    assert parley.cancelled_caught
    assert processes() == set()
