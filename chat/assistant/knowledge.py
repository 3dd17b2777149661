"""The support knowledge base: markdown articles shipped in the repository, ranked with BM25.

Questions and articles go through the same `Analyzer`: lower case, apostrophes dropped, a few
phrases read as their intent ("log in", "money back", "where is my order"), stop words out,
Snowball (Porter2) stems, and words of one support concept indexed as one term; the vocabulary
is in `chat.assistant.vocabulary`. A question word the articles never use is read as a word
they use one edit away (a typo) or as two words they use ("giftcard"). See
docs/knowledge-base.md for how this was measured.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import Stemmer
from rank_bm25 import BM25Okapi

from chat.assistant.vocabulary import PHRASES, STOP_WORDS, SYNONYMS, UNSTEMMED

ARTICLES = Path(__file__).resolve().parent / "knowledge"
KEYWORDS = "Keywords:"
TITLE_WEIGHT = 2
TITLE_BOOST = 0.25
# How much an earlier question counts when ranking a follow-up.
FOLLOW_UP_WEIGHT = 0.5
# A follow-up that points back ("is it free?", "how long does that take?") leans on the earlier
# question fully, still only as far as it leaves open.
REFERS_BACK = frozenset({"it", "that", "this", "they", "them", "those", "these"})
# Shorter words are not corrected: one edit away from a short word is too many other words.
TYPO_MIN_LENGTH = 4

_WORD = re.compile(r"[a-z0-9]+")
_APOSTROPHE = re.compile(r"['’`]")


class Analyzer:
    """Turns text into index terms; knows the articles' words to read typos against."""

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self._concept: dict[str, str] = {}
        for group in SYNONYMS:
            head = self._stemmer.stemWord(group[0])
            for word in group:
                self._concept[self._stemmer.stemWord(word)] = head
        self._known: Counter[str] = Counter()
        self._longest = 0

    def learn(self, texts: Iterable[str]) -> None:
        """Count the words of the articles, the only words a typo is corrected to."""
        self._known = Counter(w for text in texts for w in self.words(text))
        self._known.update(w for group in SYNONYMS for w in group)
        self._longest = max(map(len, self._known), default=0)

    def raw_words(self, text: str) -> list[str]:
        """Lower-cased words of `text`, stop words included."""
        return _WORD.findall(_APOSTROPHE.sub("", text.lower()))

    def words(self, text: str) -> list[str]:
        """Lower-cased words of `text`, phrases joined, stop words out, not yet stemmed."""
        text = _APOSTROPHE.sub("", text.lower())
        for pattern, word in PHRASES:
            text = pattern.sub(word, text)
        return [w for w in _WORD.findall(text) if w not in STOP_WORDS]

    def terms(self, text: str) -> list[str]:
        """The index terms of an article's text."""
        return [self._term(w) for w in self.words(text)]

    def query_terms(self, text: str) -> list[str]:
        """The index terms of a question: like `terms`, with unknown words corrected."""
        return [self._term(w) for word in self.words(text) for w in self._correct(word)]

    def _term(self, word: str) -> str:
        stem = UNSTEMMED.get(word) or self._stemmer.stemWord(word)
        return self._concept.get(stem, stem)

    def _correct(self, word: str) -> list[str]:
        """`word`, or the commonest known word one edit away, or two known words it joins."""
        if word in self._known or len(word) < TYPO_MIN_LENGTH or not word.isalpha():
            return [word]
        if len(word) > 2 * self._longest + 1:
            # Nothing known is one edit away, nor two known words joined; and the edits of a
            # 10,000-letter word would be half a million strings of 10 KB.
            return [word]
        close = (
            [w for w in _one_edit(word) if w in self._known]
            if len(word) <= self._longest + 1
            else []
        )
        if close:
            return [max(close, key=lambda w: (self._known[w], w))]
        for cut in range(3, len(word) - 2):
            if word[:cut] in self._known and word[cut:] in self._known:
                return [word[:cut], word[cut:]]
        return [word]


def _one_edit(word: str) -> set[str]:
    """Every string one deletion, transposition, replacement or insertion away from `word`."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    return {
        *(a + b[1:] for a, b in splits if b),
        *(a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1),
        *(a + c + b[1:] for a, b in splits if b for c in letters),
        *(a + c + b for a, b in splits for c in letters),
    }


class _BM25(BM25Okapi):  # type: ignore[misc]
    """BM25 with Lucene's idf, log(1 + (N - n + 0.5) / (n + 0.5)): never negative, so a word
    most articles use still counts a little, instead of a floor shared by all such words."""

    def _calc_idf(self, nd: dict[str, int]) -> None:
        n = self.corpus_size
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in nd.items()}


@dataclass(frozen=True, slots=True)
class Article:
    slug: str
    title: str
    body: str
    # Words customers use for the topic that the text may not (indexed like the title).
    keywords: str = ""

    @property
    def paragraphs(self) -> list[str]:
        return [p.strip() for p in self.body.split("\n\n") if p.strip()]


@dataclass(frozen=True, slots=True)
class Match:
    article: Article
    score: float
    confidence: float


def load_articles(folder: Path = ARTICLES) -> list[Article]:
    """The articles in `folder`: a markdown `# Title` line, an optional `Keywords:` line, then
    the body."""
    articles = []
    for path in sorted(folder.glob("*.md")):
        first, _, body = path.read_text(encoding="utf-8").partition("\n")
        keywords = ""
        if body.startswith(KEYWORDS):
            line, _, body = body.partition("\n")
            keywords = line.removeprefix(KEYWORDS).strip()
        title = first.removeprefix("#").strip()
        articles.append(Article(path.stem, title, body.strip(), keywords))
    if not articles:
        raise RuntimeError(f"no knowledge base articles in {folder}")
    return articles


class KnowledgeBase:
    """Ranks articles against a question (and, for follow-ups, the question before it)."""

    def __init__(self, articles: list[Article]) -> None:
        self.articles = articles
        self.analyzer = Analyzer()
        self.analyzer.learn(f"{a.title}\n{a.keywords}\n{a.body}" for a in articles)
        heads = [self.analyzer.terms(f"{a.title}\n{a.keywords}") for a in articles]
        corpus = [
            head * TITLE_WEIGHT + self.analyzer.terms(a.body)
            for head, a in zip(heads, articles, strict=True)
        ]
        self._bm25 = _BM25(corpus)
        self._titles = _BM25([head or ["-"] for head in heads])
        self._terms = [frozenset(doc) for doc in corpus]
        # The weight of a word no article uses: BM25's idf for a document frequency of 0.
        self._unknown_idf = math.log(1 + (len(articles) + 0.5) / 0.5)

    def scores(self, query: list[str]) -> list[float]:
        """BM25 over whole articles plus BM25 over titles alone, weighted."""
        body = self._bm25.get_scores(query)
        title = self._titles.get_scores(query)
        return [float(b) + TITLE_BOOST * float(t) for b, t in zip(body, title, strict=True)]

    def rank(self, question: str, previous: str | None = None) -> list[Match]:
        """Articles that share a term with the question, best first."""
        query = self.analyzer.query_terms(question)
        scores = self.scores(query)
        if previous:
            # The earlier question counts as much as this one leaves open: "and how long does
            # that take?" leans on it, "and if I lost my email?" stands on its own.
            best = max(range(len(scores)), key=lambda i: scores[i])
            share, idf = self._coverage(query, best)
            refers_back = not REFERS_BACK.isdisjoint(self.analyzer.raw_words(question))
            weight = (1 if refers_back else FOLLOW_UP_WEIGHT) * (1 - share * specificity(idf))
            earlier = self.scores(self.analyzer.query_terms(previous))
            scores = [s + weight * e for s, e in zip(scores, earlier, strict=True)]
        order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
        top = scores[order[0]]
        runner_up = scores[order[1]] if len(order) > 1 else 0.0
        margin = (top - runner_up) / top if top > 0 else 0.0
        return [
            Match(
                self.articles[i],
                scores[i],
                confidence(self._coverage(query, i), margin if i == order[0] else 0.0),
            )
            for i in order
            if scores[i] > 0
        ]

    def _coverage(self, query: list[str], index: int) -> tuple[float, float]:
        """The idf-weighted share of the question's terms the article has, and their idf sum."""
        weights = {t: self._bm25.idf.get(t, self._unknown_idf) for t in query}
        total = sum(weights.values())
        found = sum(w for t, w in weights.items() if t in self._terms[index])
        return (found / total if total else 0.0), found


# The idf sum at which a match counts as specific: about one rare word, or two common ones.
SPECIFIC_IDF = 2.0


def confidence(coverage: tuple[float, float], margin: float) -> float:
    """0..1: how much of the question the article speaks to, how specific the words it shares
    are, and (for the best article) how clearly it beats the next one."""
    share, idf = coverage
    if share <= 0:
        return 0.0
    return round(share * specificity(idf) * (0.7 + 0.3 * margin), 3)


def specificity(idf: float) -> float:
    """0..1 from the summed idf of the words an article shares with the question."""
    return 1 - math.exp(-idf / SPECIFIC_IDF)
