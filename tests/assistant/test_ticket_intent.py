"""When the offline assistant opens a ticket, and what it writes on it (docs/knowledge-base.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.provider import Turn
from chat.assistant.local import NO_TICKET_TOOLS, NOTHING_FOUND, TICKET_FAILED, TICKET_OFFER
from chat.assistant.ticket_intent import (
    DEFAULT_SUBJECT,
    accepts_offer,
    asks_for_ticket,
    ticket_request,
)

HERE = Path(__file__).parent

REQUESTS = [
    "open a ticket",
    "Open a ticket.",
    "I want to open a ticket about my refund",
    "I'd like to open a ticket about my refund",
    "could you file a support ticket for me",
    "please raise a ticket",
    "create a new ticket",
    "I need a ticket",
    "can I get a ticket",
    "can you open a ticket?",
    "ticket",
    "a ticket please",
    "Open a support ticket please",
    "submit a support request about my invoice",
]
NOT_REQUESTS = [
    "how do i open a ticket",
    "How can I open a ticket?",
    "what is a support ticket",
    "don't open a ticket",
    "no ticket please",
    "I don't need a ticket",
    "what's the status of my ticket",
    "any news on ticket #12",
    "is my ticket open",
    "I opened a ticket yesterday",
    "where is my refund",
    "make sure in case it breaks",
    "open the app",
    "I want to request a refund",
    "submit my request",
]
YES = ["yes", "Yes please!", "sure, go ahead", "ok do it", "please do", "yes please open it"]
NOT_YES = [
    "no thanks",
    "not now",
    "yes but later",
    "nope",
    "yes, and also how do I change my password and where do I find the settings page",
    "where is my order",
]


@pytest.mark.parametrize("message", REQUESTS)
def test_explicit_requests_ask_for_a_ticket(message: str) -> None:
    assert asks_for_ticket(message)


@pytest.mark.parametrize("message", NOT_REQUESTS)
def test_questions_refusals_and_existing_tickets_do_not(message: str) -> None:
    assert not asks_for_ticket(message)


@pytest.mark.parametrize("offer", [TICKET_OFFER, NOTHING_FOUND])
def test_a_short_yes_accepts_the_offer(offer: str) -> None:
    for message in YES:
        assert accepts_offer(message, offer), message
    for message in NOT_YES:
        assert not accepts_offer(message, offer), message


def test_a_yes_without_an_offer_is_no_request() -> None:
    assert not accepts_offer("yes please", "Here is how to reset your password.")
    assert not accepts_offer("yes please", None)
    for apology in (NO_TICKET_TOOLS, TICKET_FAILED):
        assert not accepts_offer("yes", apology)
    history = (Turn("user", "hi"), Turn("assistant", "Hello!"), Turn("user", "yes please"))
    assert ticket_request(history) is None


def test_a_named_topic_is_the_subject_and_the_request_the_description() -> None:
    wanted = ticket_request((Turn("user", "I want to open a ticket about my refund"),))
    assert wanted is not None
    assert (wanted.subject, wanted.description, wanted.priority) == (
        "My refund",
        "I want to open a ticket about my refund",
        "normal",
    )
    assert wanted.explicit


def test_accepting_the_offer_files_the_conversations_question() -> None:
    question = "my parcel arrived crushed and the vase inside is broken, what now"
    history = (
        Turn("user", question),
        Turn("assistant", NOTHING_FOUND),
        Turn("user", "Yes please"),
    )
    wanted = ticket_request(history)
    assert wanted is not None
    assert wanted.description == question
    assert wanted.subject == "My parcel arrived crushed and the vase inside is broken, what now"
    assert not wanted.explicit


def test_a_bare_request_takes_the_earlier_question_and_urgency_raises_priority() -> None:
    history = (
        Turn("user", "URGENT: someone changed my account's email address"),
        Turn("assistant", "From our help article ..."),
        Turn("user", "open a ticket"),
    )
    wanted = ticket_request(history)
    assert wanted is not None
    assert wanted.description == "URGENT: someone changed my account's email address"
    assert wanted.priority == "high"
    alone = ticket_request((Turn("user", "open a ticket"),))
    assert alone is not None
    assert (alone.subject, alone.description) == (DEFAULT_SUBJECT, "open a ticket")


def test_a_long_question_makes_a_short_subject() -> None:
    question = "word " * 100
    history = (Turn("user", question), Turn("assistant", TICKET_OFFER), Turn("user", "yes"))
    wanted = ticket_request(history)
    assert wanted is not None
    assert len(wanted.subject) <= 81 and wanted.subject.endswith("…")
    assert wanted.description == question.strip()


def test_no_question_of_the_knowledge_base_sets_opens_a_ticket_but_one_that_asks_to() -> None:
    """The tuning and holdout questions are answered from the articles; only the one that asks
    for a ticket in words is a ticket request (and it still cites its article when tickets
    cannot be opened: tests/assistant/test_local_provider.py)."""
    questions = [
        str(item["question"])
        for name in ("kb_questions.json", "kb_questions_holdout2.json")
        for item in json.loads((HERE / name).read_text())
    ]
    asking = [q for q in questions if asks_for_ticket(q)]
    assert asking == ["I need to open a ticket about a problem and attach some screenshots"]
