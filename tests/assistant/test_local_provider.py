"""The offline knowledge-base assistant: citations, confidence, follow-ups, pace."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import anyio
import pytest

from actors.provider import ReplyInfo, ReplyRequest, TextDelta, Turn
from chat.assistant.knowledge import KnowledgeBase, load_articles
from chat.assistant.local import NOTHING_FOUND, TICKET_OFFER, LocalProvider

pytestmark = pytest.mark.anyio
QUESTIONS = json.loads((Path(__file__).parent / "kb_questions.json").read_text())
REQUIRED_ACCURACY = 0.9


@pytest.fixture(scope="module", name="knowledge")
def fixture_knowledge() -> KnowledgeBase:
    return KnowledgeBase(load_articles())


def provider(knowledge: KnowledgeBase, delay_s: float = 0) -> LocalProvider:
    return LocalProvider(knowledge, token_delay_s=delay_s, article_url="https://kb/{slug}")


async def ask(p: LocalProvider, *questions: str) -> tuple[str, ReplyInfo, int]:
    history = []
    for q in questions:
        history += [Turn("user", q), Turn("assistant", "(earlier answer)")]
    request = ReplyRequest(uuid.uuid4(), uuid.uuid4(), tuple(history[:-1]))
    text, info, chunks = "", ReplyInfo(), 0
    async for part in p.stream(request):
        if isinstance(part, TextDelta):
            text += part.text
            chunks += 1
        elif isinstance(part, ReplyInfo) and part.model:
            info = part
    return text, info, chunks


def test_the_knowledge_base_is_big_enough() -> None:
    articles = load_articles()
    assert len(articles) >= 25
    assert len(QUESTIONS) >= 30
    slugs = {a.slug for a in articles}
    assert {q["article"] for q in QUESTIONS} <= slugs


async def test_the_right_article_is_cited_for_most_questions(knowledge: KnowledgeBase) -> None:
    p = provider(knowledge)
    right = 0
    misses = []
    for item in QUESTIONS:
        _, info, _ = await ask(p, item["question"])
        cited = [r["id"] for r in info.entity_references]
        if cited and cited[0] == item["article"]:
            right += 1
        else:
            misses.append((item["question"], item["article"], cited))
    accuracy = right / len(QUESTIONS)
    print(f"knowledge base: {right}/{len(QUESTIONS)} = {accuracy:.1%} cite the right article")
    assert accuracy >= REQUIRED_ACCURACY, misses


async def test_an_answer_names_its_article_and_links_it(knowledge: KnowledgeBase) -> None:
    text, info, chunks = await ask(provider(knowledge), "I forgot my password, how do I reset it?")
    assert info.model == "parley-kb-bm25"
    assert info.entity_references[0] == {
        "type": "article",
        "id": "reset-password",
        "label": "How to reset a forgotten password",
    }
    assert info.entity_links[0]["url"] == "https://kb/reset-password"
    assert "How to reset a forgotten password" in text
    assert info.confidence is not None and 0.3 <= info.confidence <= 1
    assert chunks > 20  # streamed piece by piece, not in one go


async def test_nothing_matching_offers_a_ticket(knowledge: KnowledgeBase) -> None:
    text, info, _ = await ask(provider(knowledge), "zxqv blorp wibble")
    assert text == NOTHING_FOUND
    assert info.confidence == 0
    assert info.entity_references == []


async def test_a_weak_match_offers_a_ticket_too(knowledge: KnowledgeBase) -> None:
    text, info, _ = await ask(provider(knowledge), "tell me a joke about cats")
    assert info.confidence is not None and info.confidence < 0.3
    assert text.endswith(TICKET_OFFER)


async def test_follow_ups_use_the_earlier_question(knowledge: KnowledgeBase) -> None:
    p = provider(knowledge)
    _, alone, _ = await ask(p, "and how long does that take?")
    _, follow_up, _ = await ask(
        p, "I want my money back for a jacket", "and how long does that take?"
    )
    assert follow_up.entity_references[0]["id"] in {"request-refund", "refund-policy"}
    assert alone.entity_references[:1] != follow_up.entity_references[:1]


async def test_the_pace_is_configurable(knowledge: KnowledgeBase) -> None:
    slow = provider(knowledge, delay_s=0.01)
    started = anyio.current_time()
    _, _, chunks = await ask(slow, "how do I track my order")
    assert anyio.current_time() - started >= chunks * 0.01
