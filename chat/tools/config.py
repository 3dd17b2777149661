"""The MCP servers Parley uses: the servers file (`MCP_CONFIG`) and Parley's own server.

The file is JSON or TOML (by its suffix) in the common shape
`{"mcpServers": {"<name>": {"command": ..., "args": [...], "env": {...}, "cwd": ...,
"enabled": true, "timeout_s": 30}}}`. Only stdio servers are supported. A stdio server does
not inherit Parley's environment (only PATH, HOME and a few others), so everything a server
needs is in its `env`.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chat.tools.identity import TOOLS_SECRET_ENV, derive_tools_secret

if TYPE_CHECKING:
    from chat.settings import Settings

PARLEY_SERVER = "parley"
# Tool names reach the model as `<server>__<tool>`; OpenAI function names allow only these
# characters, at most 64 of them.
SEPARATOR = "__"
SERVER_NAME = re.compile(r"^[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*$")
MAX_SERVER_NAME = 24
KEYS = {"command", "args", "env", "cwd", "enabled", "timeout_s", "type"}
# The folder that holds the `chat` package: `python -m chat.cli` works from there both in a
# checkout and in an installed environment.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent


class ToolsConfigError(ValueError):
    """The servers file cannot be used; the message is one readable line."""


@dataclass(frozen=True)
class ServerConfig:
    name: str
    command: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    enabled: bool = True
    # Per call; `None` takes MCP_CALL_TIMEOUT_S.
    timeout_s: float | None = None


def read_servers_file(path: Path) -> dict[str, ServerConfig]:
    """The servers a file defines; `ToolsConfigError` saying what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ToolsConfigError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        if path.suffix.lower() == ".toml":
            document: Any = tomllib.loads(text)
        else:
            document = json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise ToolsConfigError(f"{path} is not valid {kind}: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("mcpServers"), dict):
        raise ToolsConfigError(f"{path}: expected an object with an 'mcpServers' object")
    return {name: _server(path, name, entry) for name, entry in document["mcpServers"].items()}


def _server(path: Path, name: str, entry: Any) -> ServerConfig:
    where = f"{path}: mcpServers.{name}"
    if not SERVER_NAME.match(name) or len(name) > MAX_SERVER_NAME:
        raise ToolsConfigError(
            f"{where}: a server name is 1-{MAX_SERVER_NAME} letters, digits, '-' or single '_'"
        )
    if not isinstance(entry, dict):
        raise ToolsConfigError(f"{where}: expected an object")
    unknown = sorted(set(entry) - KEYS)
    if unknown:
        raise ToolsConfigError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})"
        )
    if entry.get("type", "stdio") != "stdio" or "url" in entry:
        raise ToolsConfigError(f"{where}: only stdio servers (a command) are supported")
    command = entry.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ToolsConfigError(f"{where}.command: expected a non-empty string")
    args = entry.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ToolsConfigError(f"{where}.args: expected a list of strings")
    env = entry.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise ToolsConfigError(f"{where}.env: expected an object of strings")
    cwd = entry.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not Path(cwd).is_dir()):
        raise ToolsConfigError(f"{where}.cwd: {cwd!r} is not a folder")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ToolsConfigError(f"{where}.enabled: expected true or false")
    timeout = entry.get("timeout_s")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ToolsConfigError(f"{where}.timeout_s: expected a number of seconds above 0")
    return ServerConfig(
        name=name,
        command=command,
        args=tuple(args),
        env=dict(env),
        cwd=cwd,
        enabled=enabled,
        timeout_s=float(timeout) if timeout is not None else None,
    )


def database_url_for_subprocess(url: str) -> str:
    """`url` with a relative SQLite path made absolute: the server may run in another folder."""
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            path = url.removeprefix(prefix)
            if path and path != ":memory:" and not path.startswith("/"):
                return prefix + str(Path(path).resolve())
    return url


def parley_server(settings: Settings) -> ServerConfig:
    """Parley's own support-tools server, run by this interpreter (`parley mcp-server`)."""
    return ServerConfig(
        name=PARLEY_SERVER,
        command=sys.executable,
        args=("-m", "chat.cli", "mcp-server"),
        env={
            "DATABASE_URL": database_url_for_subprocess(settings.database),
            TOOLS_SECRET_ENV: derive_tools_secret(settings.jwt_secret),
            "PARLEY_VAR_DIR": str(settings.parley_var_dir.resolve()),
            "LOG_LEVEL": settings.log_level,
            "KB_ARTICLE_URL": settings.kb_article_url,
        },
        cwd=str(PACKAGE_ROOT),
    )


def configured_servers(settings: Settings) -> list[ServerConfig]:
    """Every configured server, Parley's own first unless the file or a setting replaces it."""
    servers = read_servers_file(Path(settings.mcp_config)) if settings.mcp_config else {}
    if settings.mcp_parley_server and PARLEY_SERVER not in servers:
        servers = {PARLEY_SERVER: parley_server(settings), **servers}
    return list(servers.values())
