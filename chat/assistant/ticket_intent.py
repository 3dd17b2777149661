"""When the offline assistant opens a ticket, and what it writes on it.

Documented in docs/knowledge-base.md ("Opening a ticket").

Rules, on the user's latest message:
- An explicit request opens one: a verb of opening before "ticket" or "support request"
  ("open a ticket", "could you file a support ticket", "raise a ticket for me"), or wanting one
  ("I want a ticket", "I'd like to open a ticket about my refund", "can I get a ticket"), or a
  bare "ticket" / "a ticket please".
- Accepting the assistant's offer opens one: the previous assistant message offered a ticket and
  this message is a short yes ("yes", "yes please", "sure, go ahead", "ok do it"; at most eight
  words).
- Never when the message says no ("don't open a ticket", "no thanks", "I don't need a
  ticket"), asks how tickets work ("how do I open a ticket?" is a help-centre question), or is
  about an existing ticket ("my ticket", "ticket #12", "status of ...").

What goes on the ticket: a topic named in the request ("... about my refund") is the subject and
the request is the description; otherwise the conversation's question (the user's last message
before this one that was not itself about opening a ticket) is both, shortened for the subject.
Words of urgency ("urgent", "asap", "emergency", "immediately") make it `high` priority.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from actors.provider import Turn

# How the local provider's answers offer a ticket (chat/assistant/local.py). Its apologies for
# a ticket it could not open do not say it, so a "yes" to an apology opens nothing.
OFFER_MARK = 'Just say "open a ticket"'
MAX_SUBJECT = 80
MAX_DESCRIPTION = 10_000
MAX_YES_WORDS = 8
DEFAULT_SUBJECT = "Support request"

_FLAGS = re.IGNORECASE
_TICKET = r"(?:(?:support\s+)?ticket|support\s+request)"
_OPEN = re.compile(
    r"\b(?:open|create|file|raise|submit|start|log|lodge|put\s+in)\b"
    r"(?:\s+(?:a|an|new|another|one|me|for|us|support|please|the)\b)*\s+" + _TICKET + r"\b",
    _FLAGS,
)
_WANT = re.compile(r"\b(?:want|need|like|get)\b(?:\s+\S+){0,4}?\s+(?:support\s+)?ticket\b", _FLAGS)
_BARE = re.compile(r"^\W*(?:a\s+)?(?:support\s+)?ticket(?:\s+please)?\W*$", _FLAGS)
_NEGATED = re.compile(
    r"\b(?:no|not|don'?t|do\s+not|doesn'?t|never|nope|nah|without)\b(?:\s+\S+){0,4}?\s+"
    r"(?:open|create|file|raise|submit|want|need|like|a|any|support)?\s*ticket\b",
    _FLAGS,
)
_ASKING_HOW = re.compile(
    r"^\W*(?:how|what|where|when|why|which|who|whose|is|are|does|do\s+i|do\s+you)\b"
    r"|\bhow\s+(?:do|can|to|would)\b",
    _FLAGS,
)
_EXISTING = re.compile(
    r"\b(?:my|the|that|this|existing|previous|old|open)\s+tickets?\b(?!\s+(?:about|for|regarding))"
    r"|\bticket\s*#?\s*\d+|\bstatus\b",
    _FLAGS,
)
_TOPIC = re.compile(r"\b(?:about|regarding|concerning|re:?|for|on|with)\s+(?P<topic>.+)$", _FLAGS)
_YES = re.compile(
    r"^(?:yes|yeah|yep|yup|sure|ok|okay|please|absolutely|definitely|alright|y)\b"
    r"|^(?:go\s+ahead|do\s+it|please\s+do|sounds\s+good|that\s+would\s+be\s+(?:great|good)"
    r"|i'?d\s+like\s+that|i\s+would\s+like\s+that)\b",
    _FLAGS,
)
_NO = re.compile(r"\b(?:no|not|don'?t|nope|nah|never|later|wait)\b", _FLAGS)
_URGENT = re.compile(r"\b(?:urgent|urgently|asap|emergency|immediately)\b", _FLAGS)
_WORDS = re.compile(r"[\w']+")


@dataclass(frozen=True)
class TicketRequest:
    """A ticket to open, with what goes on it."""

    subject: str
    description: str
    priority: str
    # The user's message, and whether it asked in words (not a yes to the offer).
    message: str
    explicit: bool


def asks_for_ticket(message: str) -> bool:
    """An explicit request for a new ticket (see the module's rules)."""
    if _NEGATED.search(message) or _ASKING_HOW.search(message) or _EXISTING.search(message):
        return False
    return bool(_OPEN.search(message) or _WANT.search(message) or _BARE.match(message))


def accepts_offer(message: str, previous_answer: str | None) -> bool:
    """A short yes right after an answer that offered a ticket."""
    if previous_answer is None or OFFER_MARK not in previous_answer:
        return False
    words = _WORDS.findall(message.lower())
    if not words or len(words) > MAX_YES_WORDS or _NO.search(message):
        return False
    return bool(_YES.match(message.strip()))


def _shorten(text: str, limit: int) -> str:
    words = " ".join(text.split()).strip(" .,;:!?")
    if len(words) <= limit:
        return words
    return words[:limit].rsplit(" ", 1)[0].rstrip(",.;:") + "…"


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def ticket_request(history: tuple[Turn, ...]) -> TicketRequest | None:
    """The ticket the user's latest message asks for, or `None` when it asks for none."""
    users = [i for i, turn in enumerate(history) if turn.role == "user"]
    if not users:
        return None
    last = users[-1]
    message = history[last].content.strip()
    previous_answer = next(
        (t.content for t in reversed(history[:last]) if t.role == "assistant"), None
    )
    explicit = asks_for_ticket(message)
    if not (explicit or accepts_offer(message, previous_answer)):
        return None
    earlier = [
        history[i].content.strip()
        for i in users[:-1]
        if not asks_for_ticket(history[i].content) and history[i].content.strip()
    ]
    question = earlier[-1] if earlier else None
    topic = _TOPIC.search(message) if explicit else None
    if topic is not None and topic.group("topic").strip(" .!?"):
        subject = _capitalised(_shorten(topic.group("topic"), MAX_SUBJECT))
        description = message
    elif question is not None:
        subject = _capitalised(_shorten(question, MAX_SUBJECT))
        description = question
    else:
        subject = DEFAULT_SUBJECT
        description = message
    priority = "high" if _URGENT.search(description) or _URGENT.search(message) else "normal"
    return TicketRequest(subject, description[:MAX_DESCRIPTION], priority, message, explicit)
