"""The tool-call half of the OpenAI provider: what the model is offered, its streamed calls
put back together, each call run through the tool service and its result handed back.

A tool that fails (an error, a timeout, a server that is down) is not the reply's failure: its
error goes back to the model as the tool's result, and the model carries on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall

from actors.provider import ReplyInfo, ReplyPart, ReplyRequest, ToolCall, ToolResult
from chat.tools.models import ToolSpec
from chat.tools.service import ToolService

TOOLS_PROMPT = (
    " You can use tools. Search the knowledge base before answering questions about the "
    "product or policies. Open a support ticket only when the customer asks for one or "
    "accepts your offer, and then tell them its number."
)
# Tools whose result is a ticket of the conversation's owner (Parley's own server).
TICKET_TOOLS = ("parley__create_ticket", "parley__get_ticket")


def tool_functions(specs: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """The `tools` parameter of a chat completion for these specs."""
    return [
        {
            "type": "function",
            "function": {
                "name": spec.name,
                "description": spec.description,
                "parameters": spec.input_schema or {"type": "object", "properties": {}},
            },
        }
        for spec in specs
    ]


@dataclass
class PendingCall:
    """A tool call as its streamed deltas arrive (the arguments come in pieces)."""

    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class Turn:
    """What one completion said: its text and the tool calls it asked for, by index."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, PendingCall] = field(default_factory=dict)

    def add_calls(self, deltas: Sequence[ChoiceDeltaToolCall]) -> None:
        for delta in deltas:
            call = self.calls.setdefault(delta.index, PendingCall())
            call.id = call.id or (delta.id or "")
            if delta.function is not None:
                call.name += delta.function.name or ""
                call.arguments += delta.function.arguments or ""

    def ordered_calls(self) -> list[PendingCall]:
        return [self.calls[index] for index in sorted(self.calls)]

    def assistant_message(self) -> dict[str, Any]:
        """The model's own message, as the next completion's history must repeat it."""
        return {
            "role": "assistant",
            "content": "".join(self.text) or None,
            "tool_calls": [
                {
                    "id": call.id or f"call_{index}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments or "{}"},
                }
                for index, call in enumerate(self.ordered_calls())
            ],
        }


@dataclass
class References:
    """The tickets the reply's tool calls touched, for `entity_references` / `entity_links`."""

    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    links: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, data: Any) -> bool:
        """Note the ticket in a tool's result; whether it was new."""
        ticket = data.get("ticket", data) if isinstance(data, dict) else None
        if name not in TICKET_TOOLS or not isinstance(ticket, dict):
            return False
        ticket_id, number, subject = (ticket.get(k) for k in ("id", "number", "subject"))
        if not isinstance(ticket_id, str) or number is None or ticket_id in self.references:
            return False
        label = f"Ticket #{number}: {subject}"
        self.references[ticket_id] = {"type": "ticket", "id": ticket_id, "label": label}
        self.links[ticket_id] = {"title": label, "url": f"/api/v1/tickets/{ticket_id}"}
        return True

    def info(self) -> ReplyInfo:
        return ReplyInfo(
            entity_references=list(self.references.values()),
            entity_links=list(self.links.values()),
        )


def _arguments(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def run_calls(
    tools: ToolService,
    turn: Turn,
    request: ReplyRequest,
    messages: list[Any],
    references: References,
) -> AsyncGenerator[ReplyPart, None]:
    """Run the turn's calls in order: each one's events, and its result into `messages`."""
    messages.append(turn.assistant_message())
    for index, call in enumerate(turn.ordered_calls()):
        arguments = _arguments(call.arguments)
        yield ToolCall(call.name, arguments if arguments is not None else {})
        if arguments is None:
            ok, content = False, "Error: the arguments were not a JSON object."
        else:
            outcome = await tools.call(
                call.name,
                arguments,
                user_id=request.user_id,
                conversation_id=request.conversation_id,
            )
            ok = outcome.ok
            text = outcome.text or (json.dumps(outcome.data) if outcome.data is not None else "")
            content = text if ok else f"Error: {text}"
            if ok and references.add(call.name, outcome.data):
                yield references.info()
        yield ToolResult(call.name, ok)
        messages.append(
            {"role": "tool", "tool_call_id": call.id or f"call_{index}", "content": content}
        )
