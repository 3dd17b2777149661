"""The support knowledge base: markdown articles shipped in the repository, ranked with BM25.

Questions and articles go through the same `Analyzer`: lower case, apostrophes dropped, a few
multi-word phrases read as one word ("log in", "money back"), stop words out, Snowball (Porter2)
stems, and words of one support concept indexed as one term (`SYNONYMS`). A question word the
articles never use is read as a word they use one edit away (a typo) or as two words they use
("giftcard"). See docs/knowledge-base.md for how this was measured.
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

ARTICLES = Path(__file__).resolve().parent / "knowledge"
KEYWORDS = "Keywords:"
TITLE_WEIGHT = 2
TITLE_BOOST = 0.25
# How much an earlier question counts when ranking a follow-up.
FOLLOW_UP_WEIGHT = 0.5
# Shorter words are not corrected: one edit away from a short word is too many other words.
TYPO_MIN_LENGTH = 4

_WORD = re.compile(r"[a-z0-9]+")
_APOSTROPHE = re.compile(r"['’`]")

# Function words only, so question words that carry intent in support ("where", "when") stay.
# Contractions appear without their apostrophe, as customers often type them.
_STOP_WORDS_TEXT = """
a about after again all also am an and any are as at be because been before being but by
can could did do does doing for from had has have having he her here hers him his how i if
in into is it its itself just me more most my myself no nor not of off on once only or other
our ours out over own please pls plz same she should so some such than that the their them
then there these they this those to too u ur very was we were what which while who whom why
will with would you your yours yourself hi hello hey thanks thank thx ok okay get got want
wanted need needs needed cant dont didnt doesnt wont isnt arent wasnt werent couldnt wouldnt
shouldnt havent hasnt im ive id youre youve thats whats hows theres let lets tell us
know help one now really actually still many yet
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())

# Phrases rewritten to one word before splitting, on questions and articles alike.
_PHRASES = (
    (r"\b(?:log|sign)(?:ged|ging|s)?[\s-]*(?:in|on)\b", "login"),
    (r"\b(?:log|sign)(?:ged|ging|s)?[\s-]*out\b", "logout"),
    (r"\bsign(?:ed|ing|s)?[\s-]*up\b", "signup"),
    (r"\b(?:2|two)[\s-]*(?:fa|factor|step)\b|\bmfa\b", "twofactor"),
    (r"\be-mail", "email"),
    (r"\bmoney[\s-]*back\b", "refund"),
    (r"\bsend(?:ing|s)?\s+(?:\w+\s+)?back\b", "return"),
    (r"\bwheres\b", "where"),
    (r"\bhow much\b", "price"),
    (r"\bopt(?:ed|ing|s)?[\s-]*out\b", "unsubscribe"),
)
_PHRASE_PATTERNS = tuple((re.compile(p), word) for p, word in _PHRASES)

# Words whose Snowball stem would merge them with a word of another meaning.
UNSTEMMED = {"personal": "personal"}

# Words customers use for a concept the articles name otherwise. Each group is one support
# concept; all its words are indexed as the group's first word. Kept to plain synonyms:
# a word with a second common meaning in the articles (charge, phone, open, lost) is not here.
SYNONYMS = (
    ("password", "pw", "pwd", "passwd", "passcode"),
    ("login", "signin", "logon"),
    ("signup", "register", "registration", "enrol", "enroll"),
    ("account", "profile", "acct"),
    ("parcel", "package", "shipment", "stuff"),
    ("refund", "reimburse", "reimbursement"),
    ("agent", "human", "person", "representative"),
    ("contact", "talk", "speak"),
    ("email", "mail", "mailbox"),
    ("price", "cost", "fee", "fees"),
    ("invoice", "receipt"),
    ("promo", "coupon", "discount", "voucher"),
    ("ship", "shipping", "deliver", "delivery"),
    ("carrier", "courier"),
    ("international", "internationally", "abroad", "overseas", "worldwide"),
    ("exchange", "swap"),
    ("delete", "erase"),
    ("damaged", "broken", "crushed", "smashed", "cracked", "shattered"),
    ("verify", "verification", "verified", "verifying"),
    ("membership", "subscription"),
    ("colour", "color"),
    ("quick", "quickly", "fast", "faster", "fastest"),
    ("data", "info", "information"),
)


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

    def learn(self, texts: Iterable[str]) -> None:
        """Count the words of the articles, the only words a typo is corrected to."""
        self._known = Counter(w for text in texts for w in self.words(text))
        self._known.update(w for group in SYNONYMS for w in group)

    def words(self, text: str) -> list[str]:
        """Lower-cased words of `text`, phrases joined, stop words out, not yet stemmed."""
        text = _APOSTROPHE.sub("", text.lower())
        for pattern, word in _PHRASE_PATTERNS:
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
        close = [w for w in _one_edit(word) if w in self._known]
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
        self._bm25 = BM25Okapi(corpus)
        self._titles = BM25Okapi([head or ["-"] for head in heads])
        self._terms = [frozenset(doc) for doc in corpus]
        # The weight of a word no article uses: BM25's idf for a document frequency of 0.
        self._unknown_idf = math.log((len(articles) + 0.5) / 0.5)

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
            weight = FOLLOW_UP_WEIGHT * (1 - share * specificity(idf))
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
