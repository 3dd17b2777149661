"""What the tool service gives its users: tool specs, call outcomes and server statuses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ServerState = Literal["idle", "starting", "ready", "failed", "disabled", "stopped"]


@dataclass(frozen=True)
class ToolSpec:
    """One tool as the model sees it: the namespaced name `<server>__<tool>`."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ToolOutcome:
    """A call's result; `ok` is false when the tool or its server failed (`text` says why)."""

    ok: bool
    text: str
    # The tool's structured content (parsed JSON), when it gave one.
    data: Any | None = None


@dataclass(frozen=True)
class ServerStatus:
    name: str
    state: ServerState
    last_error: str | None
    restarts: int
    tools: list[ToolSpec] = field(default_factory=list)
