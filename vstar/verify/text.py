"""Words of free text: tokens, content words, a fuzzy word ratio, light stems and negation.

>>> words("He isn't playing the Guitar!")
['he', "isn't", 'playing', 'the', 'guitar']
>>> content_words("playing the guitar")
['playing', 'guitar']
>>> ratio("guitar", "guitars"), sorted(stems("hedges")), sorted(stems("playing"))
(92, ['hedg', 'hedge', 'hedges'], ['play', 'playing'])
>>> find_word(Words.of("he is not playing guitar"), "playing", 85)
(3, 'playing', 100, True)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "and",
        "or",
        "with",
        "for",
        "by",
        "from",
        "as",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "into",
        "onto",
        "some",
        "any",
        "his",
        "her",
        "their",
        "there",
        "here",
        "which",
        "who",
        "whom",
        "whose",
        "what",
    ]
)
NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "without",
        "cannot",
        "isn't",
        "aren't",
        "wasn't",
        "weren't",
        "doesn't",
        "don't",
        "didn't",
        "can't",
        "won't",
        "hasn't",
        "haven't",
        "hadn't",
    ]
)
NOT_NEGATING = frozenset({("no", "doubt"), ("not", "only"), ("without", "doubt")})
NEGATION_WINDOW = 3  # a negation this many words before a match negates it ("is not really playing")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    """Words that carry meaning; all words when every one is a stopword."""
    ws = words(text)
    return [w for w in ws if w not in STOPWORDS] or ws


@lru_cache(maxsize=65536)
def ratio(a: str, b: str) -> int:
    """0–100 similarity of two words: 2·LCS / (len a + len b), the indel ratio fuzzywuzzy reports."""
    if a == b:
        return 100
    la, lb = len(a), len(b)
    if not la or not lb:
        return 0
    prev = [0] * (lb + 1)
    for ca in a:
        cur = [0]
        for j, cb in enumerate(b):
            cur.append(prev[j] + 1 if ca == cb else max(prev[j + 1], cur[j]))
        prev = cur
    return round(200 * prev[lb] / (la + lb))


_SUFFIXES = ("ing", "ed", "es", "s")


def stems(word: str) -> set[str]:
    """The word and its light stems (plural and verb endings off, 3+ letters left). Two words share a
    stem when one is a plural or inflection of the other: hedge/hedges, box/boxes, played/playing."""
    word = word.removesuffix("'s")
    return {word} | {word[: -len(x)] for x in _SUFFIXES if word.endswith(x) and len(word) - len(x) >= 3}


def matches(token: str, word: str, min_ratio: float) -> bool:
    """A token matches a word when they share a stem or their ratio reaches `min_ratio`."""
    return bool(stems(token) & stems(word)) or ratio(token, word) >= min_ratio


def _length_range(n: int, min_ratio: float) -> range:
    """Token lengths that can reach `min_ratio` against a word of length n (ratio <= 2·min / sum)."""
    if min_ratio <= 0:
        return range(0, 10**6)
    return range(math.ceil(n * min_ratio / (200 - min_ratio) - 1e-9), math.floor(n * (200 - min_ratio) / min_ratio) + 1)


@dataclass
class Words:
    """An answer's words, indexed once: distinct tokens by length, and where each occurs."""

    tokens: list[str]
    positions: dict[str, list[int]]
    by_length: dict[int, list[str]]
    by_stem: dict[str, list[str]]

    @classmethod
    def of(cls, text: str) -> Words:
        tokens = words(text)
        positions: dict[str, list[int]] = {}
        for i, tok in enumerate(tokens):
            positions.setdefault(tok, []).append(i)
        by_length: dict[int, list[str]] = {}
        by_stem: dict[str, list[str]] = {}
        for tok in positions:
            by_length.setdefault(len(tok), []).append(tok)
            for s in stems(tok):
                by_stem.setdefault(s, []).append(tok)
        return cls(tokens, positions, by_length, by_stem)

    def similar(self, word: str, min_ratio: float) -> list[tuple[str, int]]:
        """Distinct tokens that match `word` (a shared stem, or a ratio of at least `min_ratio`), with their ratio."""
        found = {tok for s in stems(word) for tok in self.by_stem.get(s, ())}
        for n in _length_range(len(word), min_ratio):
            found.update(tok for tok in self.by_length.get(n, ()) if ratio(tok, word) >= min_ratio)
        return [(tok, ratio(tok, word)) for tok in found]


def negated(tokens: list[str], i: int) -> bool:
    """Whether a negation stands within NEGATION_WINDOW words before position i."""
    for j in range(max(0, i - NEGATION_WINDOW), i):
        if tokens[j] in NEGATIONS and (tokens[j], tokens[j + 1]) not in NOT_NEGATING:
            return True
    return False


def find_word(ws: Words, word: str, min_ratio: float, start: int = 0) -> tuple[int, str, int, bool] | None:
    """The best match of `word` at or after `start`: (position, token, ratio, negated), preferring
    a match that is not negated, then the higher ratio, then the earlier position. None below `min_ratio`."""
    best = None
    for tok, r in ws.similar(word, min_ratio):
        for i in ws.positions[tok]:
            if i >= start:
                key = (not negated(ws.tokens, i), r, -i)
                if best is None or key > best[0]:
                    best = (key, (i, tok, r, not key[0]))
    return None if best is None else best[1]


def first_word(ws: Words, word: str, min_ratio: float, start: int, stop: int | None = None) -> int | None:
    """The earliest position in [start, stop) of a token matching `word` (for order, not the best match)."""
    stop = len(ws.tokens) if stop is None else stop
    hits = [i for tok, _ in ws.similar(word, min_ratio) for i in ws.positions[tok] if start <= i < stop]
    return min(hits, default=None)
