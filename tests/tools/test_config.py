"""The servers file (MCP_CONFIG) and Parley's own server's configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chat.settings import SettingsError, load_settings
from chat.tools.config import PARLEY_SERVER, ServerConfig, configured_servers, read_servers_file
from chat.tools.identity import TOOLS_SECRET_ENV, derive_tools_secret
from tests.server import ROOT

SECRET = "config-test-secret-" + "s" * 32


def settings_with(tmp_path: Path, **values: str) -> Any:
    environ = {"PARLEY_VAR_DIR": str(tmp_path / "var"), "JWT_SECRET": SECRET}
    return load_settings(environ | {k.upper(): v for k, v in values.items()})


def test_json_and_toml_files_in_the_mcpservers_shape(tmp_path: Path) -> None:
    as_json = tmp_path / "mcp.json"
    as_json.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "time": {
                        "command": "mcp-server-time",
                        "args": ["--local-timezone", "UTC"],
                        "env": {"TZ": "UTC"},
                        "cwd": str(tmp_path),
                        "enabled": False,
                        "timeout_s": 5,
                    }
                }
            }
        )
    )
    as_toml = tmp_path / "mcp.toml"
    as_toml.write_text(
        '[mcpServers.time]\ncommand = "mcp-server-time"\n'
        'args = ["--local-timezone", "UTC"]\nenv = { TZ = "UTC" }\n'
        f'cwd = "{tmp_path}"\nenabled = false\ntimeout_s = 5\n'
    )
    expected = ServerConfig(
        "time",
        "mcp-server-time",
        ("--local-timezone", "UTC"),
        {"TZ": "UTC"},
        str(tmp_path),
        False,
        5.0,
    )
    assert read_servers_file(as_json) == read_servers_file(as_toml) == {"time": expected}


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("{", "is not valid JSON"),
        ("[]", "expected an object with an 'mcpServers' object"),
        ('{"servers": {}}', "expected an object with an 'mcpServers' object"),
        ('{"mcpServers": {"a__b": {"command": "x"}}}', "a server name is 1-24 letters"),
        ('{"mcpServers": {"t": {"command": "x", "timeot": 3}}}', "unknown key 'timeot'"),
        ('{"mcpServers": {"t": {"url": "http://x"}}}', "unknown key 'url'"),
        ('{"mcpServers": {"t": {"type": "sse", "command": "x"}}}', "only stdio servers"),
        ('{"mcpServers": {"t": {"command": ""}}}', "t.command: expected a non-empty string"),
        ('{"mcpServers": {"t": {"command": "x", "args": "-v"}}}', "args: expected a list"),
        ('{"mcpServers": {"t": {"command": "x", "env": {"A": 1}}}}', "env: expected an object"),
        ('{"mcpServers": {"t": {"command": "x", "enabled": "no"}}}', "expected true or false"),
        ('{"mcpServers": {"t": {"command": "x", "timeout_s": 0}}}', "above 0"),
        ('{"mcpServers": {"t": {"command": "x", "cwd": "/nowhere"}}}', "is not a folder"),
    ],
)
def test_a_bad_file_is_one_clear_line_at_start(tmp_path: Path, content: str, error: str) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(content)
    with pytest.raises(SettingsError) as raised:
        settings_with(tmp_path, mcp_config=str(path))
    message = str(raised.value)
    assert message.startswith(f"invalid setting MCP_CONFIG: {path}")
    assert error in message
    assert "\n" not in message


def test_a_missing_file_stops_the_command_line_with_one_line(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "PARLEY_VAR_DIR": str(tmp_path),
        "MCP_CONFIG": str(tmp_path / "missing.toml"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "chat.cli", "migrate"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"error: invalid setting MCP_CONFIG: cannot read {tmp_path / 'missing.toml'}: "
        "No such file or directory\n"
    )


def test_parley_s_own_server_is_configured_with_the_environment_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = settings_with(tmp_path, database_url="sqlite:///relative.db")
    [server] = configured_servers(settings)

    assert server.name == PARLEY_SERVER
    assert (server.command, server.args) == (sys.executable, ("-m", "chat.cli", "mcp-server"))
    # A stdio server does not inherit the environment: what it needs is passed, the SQLite
    # path made absolute (it runs in another folder), and never the JWT secret itself.
    assert server.env["DATABASE_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'relative.db'}"
    assert server.env[TOOLS_SECRET_ENV] == derive_tools_secret(SECRET)
    assert SECRET not in server.env.values()
    assert "JWT_SECRET" not in server.env
    assert server.env["PARLEY_VAR_DIR"] == str((tmp_path / "var").resolve())


def test_the_file_or_a_setting_replaces_parley_s_own_server(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"time": {"command": "mcp-server-time"}}}))
    names = [s.name for s in configured_servers(settings_with(tmp_path, mcp_config=str(path)))]
    assert names == ["parley", "time"]
    off = settings_with(tmp_path, mcp_config=str(path), mcp_parley_server="false")
    assert [s.name for s in configured_servers(off)] == ["time"]
    path.write_text(json.dumps({"mcpServers": {"parley": {"command": "my-parley"}}}))
    [own] = configured_servers(settings_with(tmp_path, mcp_config=str(path)))
    assert (own.name, own.command, own.env) == ("parley", "my-parley", {})
