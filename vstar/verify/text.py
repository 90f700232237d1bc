"""Words of free text: tokens with their sentence and clause, light stems, negation scoped to a clause.

>>> words("He isn't playing the Guitar!")
['he', "isn't", 'playing', 'the', 'guitar']
>>> content_words("playing the guitar")
['playing', 'guitar']
>>> sorted(stems("ties")), sorted(stems("tying")), sorted(stems("took"))
(['tie', 'ties'], ['tie', 'tying'], ['take', 'took'])
>>> t = Tokens.of("The man, who has no hat, is not really playing guitar; he sings.")
>>> [t.tokens[i] for i in t.positions("playing")], t.negated(t.positions("playing")[0])
(['playing'], True)
>>> t.negated(t.positions("sings")[0])
False
>>> Tokens.of("She did two-and-a-half somersaults and 10 sit-ups.").tokens
['she', 'did', '2.5', 'somersaults', 'and', '10', 'sit', 'ups']
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, islice, repeat

from rapidfuzz import fuzz

from vstar.verify.parse import digitise


class once:  # a decorator, as functools.cached_property
    """`functools.cached_property` without its lock: Python 3.11's takes one on the first read of every instance's
    value (a third of a microsecond, several per answer), and an answer is read by one thread."""

    def __init__(self, func):
        self.func, self.name, self.__doc__ = func, func.__name__, func.__doc__

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)  # read from the instance's dict from now on
        return value


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
        "somewhere",
        "something",
        "someone",
        "my",
        "your",
        "our",
        "them",
        "him",
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
        "couldn't",
        "wouldn't",
        "shouldn't",
        "unlike",
    ]
)
NOT_NEGATING = frozenset({("no", "doubt"), ("not", "only"), ("without", "doubt"), ("not", "just")})
NEGATING_PAIRS = frozenset({("instead", "of"), ("rather", "than"), ("as", "opposed"), ("other", "than")})
NEGATING_FIRST = NEGATIONS | {a for a, _ in NEGATING_PAIRS}  # a negation's first word
# Irregular forms a 7B model writes for the verbs of action names (STAR's "Took.", "Threw the pillow.").
IRREGULAR = {
    "took": "take", "taken": "take", "threw": "throw", "thrown": "throw", "sat": "sit", "ate": "eat",
    "eaten": "eat", "drank": "drink", "drunk": "drink", "held": "hold", "put": "put", "ran": "run", "rode": "ride",
    "ridden": "ride", "swam": "swim", "wore": "wear", "worn": "wear", "lay": "lie", "lain": "lie", "got": "get",
    "gave": "give", "given": "give", "made": "make", "went": "go", "gone": "go", "wrote": "write",
    "written": "write", "drew": "draw", "drawn": "draw", "cut": "cut", "hit": "hit", "blew": "blow",
    "blown": "blow", "caught": "catch", "brought": "bring", "bought": "buy", "left": "leave", "stood": "stand",
    "fell": "fall", "fallen": "fall", "flew": "fly", "flown": "fly", "dug": "dig", "hung": "hang", "sang": "sing",
    "sung": "sing", "swung": "swing", "kept": "keep", "saw": "see", "seen": "see", "shook": "shake", "tore": "tear",
    "torn": "tear", "woke": "wake", "broke": "break", "broken": "break", "fed": "feed", "did": "do", "done": "do",
}  # fmt: skip
_SUFFIXES = ("ing", "ed", "es", "s")
SCANS = 16  # tokens a text's lookups find by scanning its tokens before every token is indexed (see Tokens.where)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# a token: a word or a number (digits, "2.5", "1,200"); hyphens join words ("sit-ups" is also indexed as "situps").
# The word first: most tokens are words, and the two begin with different characters (the same matches, 10 % faster).
_TOKEN = re.compile(r"[a-z]++(?:'[a-z]++)?+(?:-[a-z]++)*+|\d++(?:[.,]\d++)*+")
_TOKEN_SPLIT = re.compile(f"({_TOKEN.pattern})")  # split on tokens: [gap, token, gap, token, …, gap], all in C
# The same split for an ASCII text, whose only digits are 0-9: re skips to a character of a plain set faster than to one
# of a set with a Unicode category (\d); the same matches, the split 7 % faster
_TOKEN_SPLIT_ASCII = re.compile(_TOKEN_SPLIT.pattern.replace("\\d", "[0-9]"))
# Sentence ends: . ! ? before a space (not inside a number or "Soms.Pike"); ; and line breaks too. Written to begin
# with a character class, which re scans for in C (`[.!?]++(?=\s|$)|[;\n]` tries every position in Python's loop). A
# run of end marks ends where its last mark does: only that one is read (each mark of the run tested alone), so a long
# run before a letter costs its length (reading the rest of the run from each of its marks cost its square).
SENTENCE_END = re.compile(r"[.!?;\n](?:(?<=[;\n])|(?=\s|$))")
# Clause breaks inside a sentence: commas, colons, brackets, dashes and the words that start a new clause.
_CLAUSE_MARK = re.compile(r"[,:()\[\]]")
_DASH = re.compile(r"\s[-–—]\s")
_CLAUSE_WORDS = ("but", "however", "although", "though", "whereas", "while")


def clause_breaks(text: str) -> list[int]:
    """Where clause breaks start (sorted): a comma, colon or bracket, a dash between spaces, or one of the words
    "but", "however", "although", "though", "whereas", "while" (case as written). Found with a character class and
    str.find: one alternation regex over all of them (a leading word boundary) costs about three times as much.

    >>> clause_breaks("He sat, however tired - and (slowly) left; abut")
    [6, 8, 21, 28, 35]
    """
    out = [m.start() for m in _CLAUSE_MARK.finditer(text)]
    if "-" in text or "–" in text or "—" in text:
        out += [m.start() for m in _DASH.finditer(text)]
    n = len(text)
    for w in _CLAUSE_WORDS:
        i = text.find(w)
        while i >= 0:
            j = i + len(w)
            if (not i or not _is_word(text[i - 1])) and (j == n or not _is_word(text[j])):
                out.append(i)
            i = text.find(w, j)
    out.sort()
    return out


def _is_word(c: str) -> bool:
    """re's `\\w` for one character."""
    return c.isalnum() or c == "_"


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    """Words that carry meaning; all words when every one is a stopword."""
    ws = words(text)
    return [w for w in ws if w not in STOPWORDS] or ws


@lru_cache(maxsize=65536)
def ratio(a: str, b: str) -> int:
    """0–100 similarity of two words: the indel ratio (rapidfuzz's `fuzz.ratio`, which replaced a pure-Python LCS)."""
    return round(fuzz.ratio(a, b))


@lru_cache(maxsize=65536)
def stems(word: str) -> frozenset[str]:
    """The word and its light stems: plural and verb endings off (3+ letters left, a doubled consonant undone, a
    silent e put back), -ies/-ied/-ying as -y/-ie, irregular verbs as their base. Two words share a stem when one is
    a plural or inflection of the other: hedge/hedges, ride/riding, ties/tying, took/take, running/run."""
    word = word.removesuffix("'s")
    out = {word}
    if word in IRREGULAR:
        out.add(IRREGULAR[word])
    if word.endswith(("ies", "ied")) and len(word) > 4:
        out.add(word[:-3] + "y")
    if word.endswith("ying") and len(word) >= 5:
        out.add(word[:-4] + "ie")
    for x in _SUFFIXES:
        base = word[: -len(x)]
        if word.endswith(x) and len(base) >= 3:
            out.add(base)
            if x in ("ing", "ed"):
                out.add(base + "e")
                if len(base) >= 3 and base[-1] == base[-2] and base[-1] not in "aeiouls":
                    out.add(base[:-1])  # running → run, swimming → swim (not "rolling" → "rol")
    if word.endswith("e") and len(word) >= 4:
        out.add(word[:-1])  # dance ~ danc(ing)
    return frozenset(s for s in out if len(s) >= 2 or s == word)


_IRREGULAR_FORMS: dict[str, tuple[str, ...]] = {}
for _form, _base in IRREGULAR.items():
    _IRREGULAR_FORMS[_base] = (*_IRREGULAR_FORMS.get(_base, ()), _form)


@lru_cache(maxsize=65536)
def inflections(word: str) -> tuple[frozenset[str], tuple[frozenset[str], ...]]:
    """The words that share a stem with `word`, and for each of its stems the words that have it: `stems` read
    backward, so that a text's tokens are looked up by these (a few words of a label) instead of every token's stems
    being computed. Each rule of `stems` that makes a stem s of a word w (less its "'s") says what w is, given s: s
    itself, s + an ending, s less its "e" (or "y", "ie") + an ending, s with its last letter doubled + "ing"/"ed",
    s + "e", an irregular form of s; each of these with "'s" too. Only the words that have s are kept.

    >>> every, per_stem = inflections("riding")
    >>> {"ride", "rides", "rode", "ridden", "riding", "ridings", "riding's"} <= every, "ridge" in every, len(per_stem)
    (True, False, 3)
    """
    out = []
    for s in stems(word):
        forms = {s, s + "e", *(s + x for x in _SUFFIXES), *_IRREGULAR_FORMS.get(s, ())}
        forms |= {s + s[-1] + "ing", s + s[-1] + "ed"}
        if s.endswith("e"):
            forms |= {s[:-1] + "ing", s[:-1] + "ed"}
        if s.endswith("y"):
            forms |= {s[:-1] + "ies", s[:-1] + "ied"}
        if s.endswith("ie"):
            forms.add(s[:-2] + "ying")
        forms |= {f + "'s" for f in forms}
        out.append(frozenset(f for f in forms if s in stems(f)))
    return frozenset().union(*out), tuple(out)


@lru_cache(maxsize=4096)
def stem_cores(anchors: frozenset[str]) -> tuple[str, ...]:
    """What every word with a stem among `anchors` contains once lower-cased, so that a text with none of these has no
    such word: each stem less the "e", "y" or "ie" that `stems` may have put back (the rest of a stem is a prefix of
    its word), and the irregular forms of each stem."""
    cores = {a[:-2] if a.endswith("ie") else a[:-1] if a.endswith(("e", "y")) else a for a in anchors}
    return tuple(cores | {form for form, base in IRREGULAR.items() if base in anchors})


def matches(token: str, word: str, min_ratio: float) -> bool:
    """A token matches a word when they share a stem, or (a typo or a spelling variant: colouring/coloring) both are
    8+ letters, start with the same 3 letters and reach `min_ratio`. Shorter words never match fuzzily: a different
    verb is a different action (putting/cutting)."""
    if stems(token) & stems(word):
        return True
    return len(token) >= 8 and len(word) >= 8 and token[:3] == word[:3] and ratio(token, word) >= min_ratio


def _negations(tokens: list[str], clauses: list[int]) -> list[bool]:
    """For every token, whether a negation stands before it in its clause (slices from each negation, few); `clauses`
    are the clauses' first tokens and the number of tokens."""
    out, marked = [False] * len(tokens), 0
    if NEGATING_FIRST.isdisjoint(tokens):
        return out
    for i in [i for i, tok in enumerate(tokens) if tok in NEGATING_FIRST]:
        pair = (tokens[i], tokens[i + 1] if i + 1 < len(tokens) else "")
        if i >= marked and ((pair[0] in NEGATIONS and pair not in NOT_NEGATING) or pair in NEGATING_PAIRS):
            marked = clauses[bisect.bisect_right(clauses, i)]  # the rest of the clause: a later negation adds nothing
            out[i + 1 : marked] = [True] * (marked - i - 1)
    return out


def _bounds(n: int, starts: list[int], cuts: list[int]) -> list[int]:
    """The first token of every segment, for segments that begin at the character offsets `cuts`, and n."""
    return sorted({0, n, *map(bisect.bisect_left, repeat(starts, len(cuts)), cuts)})


def _numbered(bounds: list[int]) -> list[int]:
    """Per token: the number of its segment."""
    out: list[int] = []
    for k in range(len(bounds) - 1):
        out += [k] * (bounds[k + 1] - bounds[k])
    return out


@dataclass
class Tokens:
    """An answer's tokens (number words as numbers), each with its sentence and clause. A token's positions are
    found when a check first asks for it (`where`): checks look up the few words of their labels, so no index of
    every token (or of every token's stems) is built."""

    tokens: list[str]
    starts: list[int]  # character offsets in the text
    sentence: list[int]  # sentence number of each token
    joined: dict[str, list[int]]  # a hyphenated word's parts joined ("situps") → ascending positions of its first part
    text: str  # the text the tokens were read from (lower case, number words as digits)
    ends: list[int]  # character offsets of its sentence ends

    @classmethod
    def of(cls, text: str) -> Tokens:
        text = digitise(text).lower()
        parts = (_TOKEN_SPLIT_ASCII if text.isascii() else _TOKEN_SPLIT).split(text)  # [gap, token, gap, …] in C
        tokens, starts, joined = parts[1::2], list(islice(accumulate(map(len, parts)), 0, len(parts) - 1, 2)), []
        if "-" in text:  # a hyphenated word is its parts, and also the parts joined ("sit-ups", "situps")
            out_t, out_s, done = [], [], 0
            for k in [k for k, tok in enumerate(tokens) if "-" in tok]:
                out_t += tokens[done:k]
                out_s += starts[done:k]
                joined.append((len(out_t), tokens[k].replace("-", "")))
                pos = starts[k]
                for part in tokens[k].split("-"):
                    out_t.append(part)
                    out_s.append(pos)
                    pos += len(part) + 1
                done = k + 1
            tokens, starts = out_t + tokens[done:], out_s + starts[done:]
        return cls._build(text, tokens, starts, joined)

    @classmethod
    def _build(cls, text: str, tokens: list[str], starts: list[int], joined: list) -> Tokens:
        ends = [m.end() for m in SENTENCE_END.finditer(text)]
        sentence = _numbered(_bounds(len(tokens), starts, ends))
        by_joined: dict[str, list[int]] = {}
        for i, tok in joined:  # "sit-ups" is also "situps", at the position of "sit" (in order)
            by_joined.setdefault(tok, []).append(i)
        return cls(tokens, starts, sentence, by_joined, text, ends)

    @once
    def clauses(self) -> list[int]:
        """The first token of every clause, and the number of tokens (read when a check first asks for a clause)."""
        return _bounds(len(self.tokens), self.starts, self.ends + clause_breaks(self.text))

    @once
    def negations(self) -> list[bool]:
        """Per token: whether a negation stands before it in its clause (the clauses found only where a negation's
        first word is)."""
        if NEGATING_FIRST.isdisjoint(self.tokens):
            return [False] * len(self.tokens)
        return _negations(self.tokens, self.clauses)

    def clause_start(self, i: int) -> int:
        """The index of the first token of token i's clause (a search in the clauses: no list per token)."""
        return self.clauses[bisect.bisect_right(self.clauses, i) - 1]

    def clause_firsts(self, a: int, b: int) -> list[int]:
        """The first tokens of the clauses that begin in [a, b)."""
        return self.clauses[bisect.bisect_left(self.clauses, a) : bisect.bisect_left(self.clauses, b)]

    @once
    def vocabulary(self) -> set[str]:
        """The distinct tokens (joined hyphenated words too): a set made in C, which words are looked up in."""
        return set(self.tokens).union(self.joined) if self.joined else set(self.tokens)

    def where(self, tok: str) -> Sequence[int]:
        """Ascending positions of a token (a joined hyphenated word at its first part's), kept. Read only. Found in C
        by list.count and list.index, a scan of the tokens each; a check that asks for more than `SCANS` tokens (a
        class among hundreds, in a long answer) has every token indexed at once, so the scans cost at most a few
        times an index of all tokens."""
        if tok not in self.vocabulary:
            return ()
        found = self._index.get(tok)
        if found is None:
            if len(self._index) >= SCANS:
                self._index = self._index_all()
                return self._index[tok]
            found, i, toks = [], -1, self.tokens
            for _ in range(toks.count(tok)):
                i = toks.index(tok, i + 1)
                found.append(i)
            if tok in self.joined:
                found = sorted(found + self.joined[tok])
            self._index[tok] = found
        return found

    @once
    def _index(self) -> dict[str, list[int]]:
        """Token → ascending positions, for the tokens asked for so far (see `where`)."""
        return {}

    def _index_all(self) -> dict[str, list[int]]:
        """Every token's positions, as `where` finds them one by one."""
        index: dict[str, list[int]] = {}
        for i, tok in enumerate(self.tokens):
            index.setdefault(tok, []).append(i)
        for tok, at in self.joined.items():
            index[tok] = sorted(index.get(tok, []) + at)
        return index

    def positions(self, word: str) -> Sequence[int]:
        """Ascending positions of the tokens that share a stem with `word` (kept: a check asks for a word again): the
        tokens of the text among its `inflections`. Read only."""
        found = self._positions.get(word)
        if found is None:
            every, per_stem = inflections(word)
            hits = self.vocabulary.intersection(every)
            if not hits:  # most words of a wrong answer, and the joined forms of a label's words ("girlputs")
                found = ()
            elif self.joined:  # a joined word and its first part may share a stem ("play-s"): each stem's list as
                # the positions of its tokens, one after another (a position twice), as an index of stems would have
                lists = [sorted(p for tok in hits & forms for p in self.where(tok)) for forms in per_stem]
                lists = [f for f in lists if f]
                found = lists[0] if len(lists) == 1 else sorted(set().union(*lists))
            elif len(hits) == 1:
                found = self.where(hits.pop())
            else:  # no two tokens at one position: the stems' lists are sets, their union the tokens' positions
                found = sorted(set().union(*map(self.where, hits)))
            self._positions[word] = found
        return found

    @once
    def _positions(self) -> dict[str, Sequence[int]]:
        return {}

    def negated(self, i: int) -> bool:
        """Whether a negation stands before token i in its clause ("I don't think he is really playing guitar")."""
        return self.negations[i]

    def sentence_range(self, s: int) -> tuple[int, int]:
        """Token positions [first, last + 1) of sentence s."""
        return bisect.bisect_left(self.sentence, s), bisect.bisect_right(self.sentence, s)

    def token_at(self, char: int) -> int:
        """The index of the first token at or after character offset `char`."""
        return bisect.bisect_left(self.starts, char)
