"""Words of free text: tokens, content words, a fuzzy word ratio and negation.

>>> words("He isn't playing the Guitar!")
['he', "isn't", 'playing', 'the', 'guitar']
>>> content_words("playing the guitar")
['playing', 'guitar']
>>> ratio("guitar", "guitars")
92
>>> find_word(words("he is not playing guitar"), "playing", 85)
(3, 'playing', 100, True)
"""

from __future__ import annotations

import re
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


def _could_reach(a: str, b: str, min_ratio: float) -> bool:
    """The ratio is at most 2·min(len)/(len a + len b): skip pairs that cannot reach `min_ratio`."""
    return 200 * min(len(a), len(b)) / (len(a) + len(b)) >= min_ratio


def matches(token: str, word: str, min_ratio: float) -> bool:
    return token == word or (_could_reach(token, word, min_ratio) and ratio(token, word) >= min_ratio)


def negated(tokens: list[str], i: int) -> bool:
    """Whether a negation stands within NEGATION_WINDOW words before position i."""
    for j in range(max(0, i - NEGATION_WINDOW), i):
        if tokens[j] in NEGATIONS and (tokens[j], tokens[j + 1]) not in NOT_NEGATING:
            return True
    return False


def find_word(tokens: list[str], word: str, min_ratio: float, start: int = 0) -> tuple[int, str, int, bool] | None:
    """The best match of `word` at or after `start`: (position, token, ratio, negated), preferring
    a match that is not negated, then the higher ratio, then the earlier position. None below `min_ratio`."""
    best = None
    for i in range(start, len(tokens)):
        tok = tokens[i]
        if tok != word and not _could_reach(tok, word, min_ratio):
            continue
        r = ratio(tok, word)
        if r < min_ratio:
            continue
        key = (not negated(tokens, i), r, -i)
        if best is None or key > best[0]:
            best = (key, (i, tok, r, key[0] is False))
    return None if best is None else best[1]
