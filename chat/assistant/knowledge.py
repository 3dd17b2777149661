"""The support knowledge base: markdown articles shipped in the repository, ranked with BM25."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from rank_bm25 import BM25Okapi

ARTICLES = Path(__file__).resolve().parent / "knowledge"
TITLE_WEIGHT = 2
# How much an earlier question counts when ranking a follow-up.
FOLLOW_UP_WEIGHT = 0.5

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS_TEXT = """
a about after again all am an and any are as at be because been before being but by can
could did do does doing don for from had has have having he her here hers how i if in into
is it its just me more most my no not now of off on once only or other our out over own
please same she should so some such than that the their them then there these they this
those to too under until up very was we were what when where which while who why will with
would you your yours hi hello thanks thank hey get got want need
"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def tokens(text: str) -> list[str]:
    """Lower-cased words without stop words, with a plural `s` taken off.

    (Stripping `-ing`/`-ed` as well was tried and ranked the test questions worse.)
    """
    words = (w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS)
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


@dataclass(frozen=True, slots=True)
class Article:
    slug: str
    title: str
    body: str

    @property
    def paragraphs(self) -> list[str]:
        return [p.strip() for p in self.body.split("\n\n") if p.strip()]


@dataclass(frozen=True, slots=True)
class Match:
    article: Article
    score: float
    confidence: float


def load_articles(folder: Path = ARTICLES) -> list[Article]:
    articles = []
    for path in sorted(folder.glob("*.md")):
        first, _, body = path.read_text(encoding="utf-8").partition("\n")
        articles.append(Article(path.stem, first.removeprefix("#").strip(), body.strip()))
    if not articles:
        raise RuntimeError(f"no knowledge base articles in {folder}")
    return articles


class KnowledgeBase:
    """Ranks articles against a question (and, for follow-ups, the question before it)."""

    def __init__(self, articles: list[Article]) -> None:
        self.articles = articles
        corpus = [tokens(a.title) * TITLE_WEIGHT + tokens(a.body) for a in articles]
        self._bm25 = BM25Okapi(corpus)

    def rank(self, question: str, previous: str | None = None) -> list[Match]:
        scores = [float(s) for s in self._bm25.get_scores(tokens(question))]
        if previous:
            earlier = self._bm25.get_scores(tokens(previous))
            scores = [s + FOLLOW_UP_WEIGHT * float(e) for s, e in zip(scores, earlier, strict=True)]
        order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
        top = scores[order[0]]
        runner_up = scores[order[1]] if len(order) > 1 else 0.0
        return [
            Match(self.articles[i], scores[i], confidence(scores[i], top, runner_up))
            for i in order
            if scores[i] > 0
        ]


def confidence(score: float, top: float, runner_up: float) -> float:
    """0..1 from how strong the match is and how clearly it beats the next one."""
    if score <= 0:
        return 0.0
    strength = 1 - math.exp(-score / 8)
    margin = (top - runner_up) / top if score == top and top > 0 else 0.0
    return round(min(1.0, strength * (0.6 + 0.4 * margin)), 3)
