"""The offline assistant: answers from the knowledge base, streamed at a set pace (or at full
speed when the request is not paced)."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator

import anyio

from actors.provider import ReplyInfo, ReplyPart, ReplyRequest, TextDelta
from chat.assistant.knowledge import KnowledgeBase, Match

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


class LocalProvider:
    """Implements `actors.provider.Provider` without any model: BM25 over the articles."""

    def __init__(self, knowledge: KnowledgeBase, *, token_delay_s: float, article_url: str) -> None:
        self._knowledge = knowledge
        self._delay = token_delay_s
        self._article_url = article_url

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyPart, None]:
        questions = [t.content for t in request.history if t.role == "user"]
        question = questions[-1] if questions else ""
        previous = questions[-2] if len(questions) > 1 else None
        text, cited = compose(self._knowledge.rank(question, previous))
        yield ReplyInfo(
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
