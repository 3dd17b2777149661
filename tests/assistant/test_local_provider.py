"""The offline knowledge-base assistant: citations, confidence, follow-ups, pace."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import anyio
import pytest

from actors.provider import ReplyInfo, ReplyRequest, TextDelta, Turn
from chat.assistant.knowledge import KnowledgeBase, load_articles
from chat.assistant.local import LOW_CONFIDENCE, NOTHING_FOUND, TICKET_OFFER, LocalProvider

pytestmark = pytest.mark.anyio
# The set the ranking is tuned on (it took in the first holdout once that had been looked at), and
# a holdout written before the next round of tuning and never tuned on (docs/knowledge-base.md).
# An item may accept more than one article.
QUESTIONS = json.loads((Path(__file__).parent / "kb_questions.json").read_text())
HOLDOUT = json.loads((Path(__file__).parent / "kb_questions_holdout2.json").read_text())
# The measured hit rates, rounded down: a change to the ranking may not lower them.
TUNING_FLOOR = 0.98
HOLDOUT_FLOOR = 0.80


@pytest.fixture(scope="module", name="knowledge")
def fixture_knowledge() -> KnowledgeBase:
    return KnowledgeBase(load_articles())


def provider(knowledge: KnowledgeBase, delay_s: float = 0) -> LocalProvider:
    return LocalProvider(knowledge, token_delay_s=delay_s, article_url="https://kb/{slug}")


async def ask(p: LocalProvider, *questions: str, paced: bool = True) -> tuple[str, ReplyInfo, int]:
    history = []
    for q in questions:
        history += [Turn("user", q), Turn("assistant", "(earlier answer)")]
    request = ReplyRequest(uuid.uuid4(), uuid.uuid4(), tuple(history[:-1]), paced=paced)
    text, info, chunks = "", ReplyInfo(), 0
    async for part in p.stream(request):
        if isinstance(part, TextDelta):
            text += part.text
            chunks += 1
        elif isinstance(part, ReplyInfo) and part.model:
            info = part
    return text, info, chunks


def accepted(item: dict[str, str | list[str]]) -> list[str]:
    article = item["article"]
    return [article] if isinstance(article, str) else article


def test_the_knowledge_base_is_big_enough() -> None:
    articles = load_articles()
    assert len(articles) >= 25
    assert len(QUESTIONS) >= 180
    assert len(HOLDOUT) >= 60
    slugs = {a.slug for a in articles}
    assert {a for item in QUESTIONS + HOLDOUT for a in accepted(item)} <= slugs
    tuning = {plain(item["question"]) for item in QUESTIONS}
    assert not tuning & {plain(item["question"]) for item in HOLDOUT}


def plain(question: str | list[str]) -> str:
    """A question without case, punctuation or apostrophes, to compare two sets."""
    return " ".join(re.findall(r"[a-z0-9]+", str(question).lower().replace("'", "")))


async def hit_rate(knowledge: KnowledgeBase, questions: list[dict[str, str | list[str]]]) -> float:
    """The share of questions whose first cited article is the expected one."""
    p = provider(knowledge)
    right = 0
    misses = []
    for item in questions:
        _, info, _ = await ask(p, str(item["question"]))
        cited = [r["id"] for r in info.entity_references]
        if cited and cited[0] in accepted(item):
            right += 1
        else:
            misses.append((item["question"], item["article"], cited[:1]))
    print(f"{right}/{len(questions)} = {right / len(questions):.1%} cite the right article")
    print("\n".join(f"  miss: {m}" for m in misses))
    return right / len(questions)


async def test_the_tuning_questions_hit_their_article(knowledge: KnowledgeBase) -> None:
    assert await hit_rate(knowledge, QUESTIONS) >= TUNING_FLOOR


async def test_the_holdout_questions_hit_their_article(knowledge: KnowledgeBase) -> None:
    assert await hit_rate(knowledge, HOLDOUT) >= HOLDOUT_FLOOR


@pytest.mark.parametrize(
    ("questions", "article"),
    [
        (["do you ship internationally"], "international-shipping"),
        # The README's walk-through: a follow-up that stands on its own.
        (["How do I reset my password?", "And if I lost my email?"], "change-email-address"),
    ],
)
async def test_reported_questions_get_their_article(
    knowledge: KnowledgeBase, questions: list[str], article: str
) -> None:
    _, info, _ = await ask(provider(knowledge), *questions)
    assert info.entity_references[0]["id"] == article


async def test_support_phrases_are_read_as_their_intent(knowledge: KnowledgeBase) -> None:
    # The intent is in the word order, not in any one word (docs/knowledge-base.md).
    p = provider(knowledge)
    for question, article in [
        ("cant log in", "reset-password"),
        ("where is my order", "track-order"),
        ("how do i get my money back", "request-refund"),
        ("too many emails from you", "notification-preferences"),
        ("how do i get in touch", "contact-support"),
    ]:
        _, info, _ = await ask(p, question)
        assert [r["id"] for r in info.entity_references[:1]] == [article], question


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
    assert info.confidence is not None and LOW_CONFIDENCE <= info.confidence <= 1
    assert TICKET_OFFER not in text
    assert chunks > 20  # streamed piece by piece, not in one go


async def test_nothing_matching_offers_a_ticket(knowledge: KnowledgeBase) -> None:
    text, info, _ = await ask(provider(knowledge), "zxqv blorp wibble")
    assert text == NOTHING_FOUND
    assert info.confidence == 0
    assert info.entity_references == []


async def test_a_weak_match_offers_a_ticket_too(knowledge: KnowledgeBase) -> None:
    text, info, _ = await ask(provider(knowledge), "write me a poem")
    assert info.confidence is not None and 0 < info.confidence < LOW_CONFIDENCE
    assert len(info.entity_links) == len(info.entity_references) >= 1
    assert text.endswith(TICKET_OFFER)


async def test_a_huge_unknown_word_is_answered_at_once(knowledge: KnowledgeBase) -> None:
    # Its one-edit variants would have been ~540,000 strings of 10 KB each (gigabytes).
    with anyio.fail_after(2):
        text, info, _ = await ask(provider(knowledge), "x" * 10_000)
    assert text == NOTHING_FOUND and info.confidence == 0


async def test_misspelt_and_short_questions_are_understood(knowledge: KnowledgeBase) -> None:
    p = provider(knowledge)
    for question, article in [
        ("forgot my pasword", "reset-password"),
        ("shiping to australia?", "international-shipping"),
        ("giftcard", "gift-cards-promo-codes"),
    ]:
        _, info, _ = await ask(p, question)
        assert info.entity_references[0]["id"] == article, question


async def test_follow_ups_use_the_earlier_question(knowledge: KnowledgeBase) -> None:
    p = provider(knowledge)
    _, alone, _ = await ask(p, "is it free?")
    _, follow_up, _ = await ask(p, "I want to send back a jacket", "is it free?")
    assert follow_up.entity_references[0]["id"] == "return-item"
    assert alone.entity_references[:1] != follow_up.entity_references[:1]


async def test_the_pace_is_configurable(knowledge: KnowledgeBase) -> None:
    slow = provider(knowledge, delay_s=0.01)
    started = anyio.current_time()
    _, _, chunks = await ask(slow, "how do I track my order")
    assert anyio.current_time() - started >= chunks * 0.01


async def test_an_unpaced_request_is_answered_at_full_speed(knowledge: KnowledgeBase) -> None:
    # At this pace a paced answer of dozens of pieces would take an hour.
    slow = provider(knowledge, delay_s=60)
    with anyio.fail_after(5):
        text, _, chunks = await ask(slow, "how do I track my order", paced=False)
    assert chunks > 20
    assert "How to track your order" in text
