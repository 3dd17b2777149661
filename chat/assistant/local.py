"""The offline assistant: answers from the knowledge base, streamed at a set pace (or at full
speed when the request is not paced)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import anyio

from actors.provider import ReplyInfo, ReplyPart, ReplyRequest, TextDelta, ToolCall, ToolResult
from chat.assistant.knowledge import KnowledgeBase, Match
from chat.assistant.ticket_intent import TicketRequest, ticket_request
from chat.tickets import ticket_label, ticket_url

if TYPE_CHECKING:
    from chat.tools.models import ToolOutcome
    from chat.tools.service import ToolService

log = logging.getLogger(__name__)

MODEL = "parley-kb-bm25"
# Below this the answer comes with an offer to open a ticket; below the floor it is only that.
# (On the tuning questions, wrong first articles score 0.22-0.55, right ones a median of 0.61.)
LOW_CONFIDENCE = 0.35
NO_MATCH = 0.12
ANSWER_WORDS = 90
# Another article is mentioned when it scores at least this share of the best one, and is
# itself a confident match (not one that merely shares a common word).
ALSO_SHARE = 0.75
_TOKEN = re.compile(r"\S+\s*")

TICKET_OFFER = (
    "If this doesn't solve it, I can open a support ticket so someone from our team can "
    'follow up with you. Just say "open a ticket".'
)
NOTHING_FOUND = (
    "I'm sorry, I couldn't find an article in our help center that answers this. "
    "I can open a support ticket so someone from our team can look into it and get back to "
    'you. Just say "open a ticket".'
)


# Parley's own MCP server's tool (chat/tools/ticket_tools.py), as the tool service names it.
CREATE_TICKET = "parley__create_ticket"
TICKET_OPENED = (
    'I\'ve opened Ticket #{number} for you: "{subject}". Someone from our support team will '
    "follow up with you there, and you can see it with your tickets."
)
NO_TICKET_TOOLS = (
    "I'm sorry, I can't open a support ticket from this chat right now: tickets are not "
    "available here at the moment. Nothing was filed."
)
TICKET_FAILED = (
    "I'm sorry, I couldn't open a support ticket just now: the ticket system did not accept "
    "it. Nothing was filed, so please try again in a little while."
)


def excerpt(match: Match) -> str:
    """The first paragraphs of an article, about `ANSWER_WORDS` words."""
    chosen: list[str] = []
    words = 0
    for paragraph in match.article.paragraphs:
        chosen.append(paragraph)
        words += len(paragraph.split())
        if words >= ANSWER_WORDS:
            break
    return "\n\n".join(chosen)


def compose(matches: list[Match]) -> tuple[str, list[Match]]:
    """The answer text and the articles it cites."""
    if not matches or matches[0].confidence < NO_MATCH:
        return NOTHING_FOUND, []
    best = matches[0]
    cited = [best]
    parts = [f'From our help article "{best.article.title}":', excerpt(best)]
    also = [
        m
        for m in matches[1:3]
        if m.score >= ALSO_SHARE * best.score and m.confidence >= LOW_CONFIDENCE
    ]
    if also:
        cited += also
        titles = ", ".join(f'"{m.article.title}"' for m in also)
        parts.append(f"You may also find this helpful: {titles}.")
    if best.confidence < LOW_CONFIDENCE:
        parts.append(TICKET_OFFER)
    return "\n\n".join(parts), cited


def _opened_ticket(outcome: ToolOutcome | None) -> dict[str, Any] | None:
    """The ticket a successful `create_ticket` call returned, if it reads as one."""
    if outcome is None or not outcome.ok or not isinstance(outcome.data, dict):
        return None
    ticket = outcome.data
    if not isinstance(ticket.get("id"), str) or not isinstance(ticket.get("number"), int):
        return None
    return ticket


class LocalProvider:
    """Implements `actors.provider.Provider` without any model: BM25 over the articles, and a
    ticket through the MCP tools when the user asks for one (chat/assistant/ticket_intent.py)."""

    def __init__(
        self,
        knowledge: KnowledgeBase,
        *,
        token_delay_s: float,
        article_url: str,
        tools: ToolService | None = None,
    ) -> None:
        self._knowledge = knowledge
        self._delay = token_delay_s
        self._article_url = article_url
        self._tools = tools

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyPart, None]:
        wanted = ticket_request(request.history)
        if wanted is not None:
            async for part in self._open_ticket(request, wanted):
                yield part
            return
        questions = [t.content for t in request.history if t.role == "user"]
        question = questions[-1] if questions else ""
        previous = questions[-2] if len(questions) > 1 else None
        text, cited = compose(self._knowledge.rank(question, previous))
        yield self._info(cited)
        async for part in self._say(text, request):
            yield part

    async def _open_ticket(
        self, request: ReplyRequest, wanted: TicketRequest
    ) -> AsyncGenerator[ReplyPart, None]:
        """Open the ticket through the tool service and say so; when that cannot be done, say
        so, and answer an explicit request from the articles too (no second ticket offer)."""
        outcome = None
        if self._tools is not None:
            arguments = {
                "subject": wanted.subject,
                "description": wanted.description,
                "priority": wanted.priority,
            }
            yield ToolCall(CREATE_TICKET, arguments)
            outcome = await self._tools.call(
                CREATE_TICKET,
                arguments,
                user_id=request.user_id,
                conversation_id=request.conversation_id,
            )
            yield ToolResult(CREATE_TICKET, outcome.ok)
        ticket = _opened_ticket(outcome)
        if ticket is not None:
            label = ticket_label(ticket)
            yield ReplyInfo(
                model=MODEL,
                entity_references=[{"type": "ticket", "id": ticket["id"], "label": label}],
                entity_links=[{"title": label, "url": ticket_url(ticket["id"])}],
            )
            text = TICKET_OPENED.format(number=ticket["number"], subject=ticket["subject"])
            async for part in self._say(text, request):
                yield part
            return
        if outcome is not None:
            log.warning("the local assistant could not open a ticket: %s", outcome.text)
        text = NO_TICKET_TOOLS if outcome is None else TICKET_FAILED
        cited: list[Match] = []
        if wanted.explicit:
            answer, cited = compose(self._knowledge.rank(wanted.message))
            if cited:
                text += "\n\n" + answer.replace(TICKET_OFFER, "").rstrip()
        yield self._info(cited)
        async for part in self._say(text, request):
            yield part

    def _info(self, cited: list[Match]) -> ReplyInfo:
        return ReplyInfo(
            model=MODEL,
            confidence=cited[0].confidence if cited else 0.0,
            entity_references=[
                {"type": "article", "id": m.article.slug, "label": m.article.title} for m in cited
            ],
            entity_links=[
                {"title": m.article.title, "url": self._article_url.format(slug=m.article.slug)}
                for m in cited
            ],
        )

    async def _say(self, text: str, request: ReplyRequest) -> AsyncGenerator[ReplyPart, None]:
        """The text, a few words at a time at the reading pace, then the usage."""
        pieces = _TOKEN.findall(text)
        # Nobody reads a synchronous reply as it arrives: it comes at full speed.
        delay = self._delay if request.paced else 0.0
        for piece in pieces:
            if delay:
                await anyio.sleep(delay)
            else:
                await anyio.lowlevel.checkpoint()
            yield TextDelta(piece)
        prompt = sum(len(t.content.split()) for t in request.history)
        yield ReplyInfo(prompt_tokens=prompt, completion_tokens=len(pieces))
