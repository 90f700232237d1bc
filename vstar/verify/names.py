"""Names read from their own structure, and found as phrases in an answer's tokens.

A name ("canoeing or kayaking", "shooting goal (soccer)", "cup/glass/bottle", "2.5 Soms.Pike") is one or more
alternative *phrases*; a phrase is a sequence of word slots, a slot the words any one of which says it (a slash name's
alternatives). A bracketed qualifier is not required ("bouncing ball (not juggling)" is said by "bouncing ball"), "X or
Y" names accept either alternative, and two words may be written as one ("sledge hammer", "sledgehammer").

>>> [p.text for p in phrases("catching or throwing baseball")]
['catching baseball', 'throwing baseball']
>>> [p.slots for p in phrases("Put a cup/glass/bottle somewhere")][0]
(('put',), ('cup', 'glass', 'bottle'))
>>> [p.text for p in phrases("bouncing ball (not juggling)")]
['bouncing ball']
>>> [p.text for p in phrases("using a sledge hammer")]
['using sledge hammer', 'using sledgehammer']
>>> from vstar.verify.text import Tokens
>>> find(Tokens.of("A guitar is there. He is playing a red electric guitar."), phrases("playing guitar")[0])
[(6, 10)]
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from functools import lru_cache

from vstar.verify.parse import digitise
from vstar.verify.text import STOPWORDS, Tokens

WINDOW = 4  # extra words a phrase may have between its own ("playing a red electric guitar")
_NAME_TOKEN = re.compile(r"\d++(?:\.\d++)?+|[a-z0-9]++(?:'[a-z]++)?+(?:/[a-z0-9]++)*+")


@dataclass(frozen=True)
class Phrase:
    slots: tuple[tuple[str, ...], ...]  # each slot: the words that say it
    text: str


def _slots(words: list[str]) -> tuple[tuple[str, ...], ...]:
    out = []
    for w in words:
        alts = tuple(a for a in w.split("/") if len(a) > 2 or a.isdigit() or "/" not in w)  # "towel/s" → towel
        if alts and not all(a in STOPWORDS for a in alts):
            out.append(alts)
    return tuple(out) or tuple((w,) for w in words)


def _alternatives(words: list[str]) -> list[list[str]]:
    """ "X or Y" names: "catching or throwing baseball" → catching baseball / throwing baseball."""
    if "or" not in words[1:-1]:
        return [words]
    i = words.index("or")
    left, right = words[:i], words[i + 1 :]
    if len(left) == 1 and len(right) > 1:
        return [[left[0], *right[1:]], right]
    if len(left) > 1 and len(right) == 1:
        return [left, [*left[:-1], right[0]]]
    return [left, right]


@lru_cache(maxsize=8192)
def phrases(name: str) -> tuple[Phrase, ...]:
    """The phrases that say `name` (abbreviations already expanded), see the module docstring."""
    core = re.sub(r"\([^)]*\)", " ", name).strip() or name
    words = _NAME_TOKEN.findall(digitise(core.lower()).replace("-", " "))
    out = []
    for alt in _alternatives(words):
        slots = _slots(alt)
        out.append(Phrase(slots, " ".join("/".join(s) for s in slots)))
        for k in range(len(slots) - 1):  # two words written as one: "sledge hammer" / "sledgehammer"
            a, b = slots[k], slots[k + 1]
            if (
                len(a) == len(b) == 1
                and a[0].isalpha()
                and not (a[0] + b[0]).endswith("ing")
                and not a[0].endswith("ing")
            ):
                joined = (*slots[:k], (slots[k][0] + slots[k + 1][0],), *slots[k + 2 :])
                out.append(Phrase(joined, " ".join("/".join(s) for s in joined)))
    return tuple(out)


def _slot_positions(tokens: Tokens, slot: tuple[str, ...], strict: bool) -> list[int]:
    """Positions of the tokens that say a slot: any inflection (strict: the word or its plural only). Read only: the
    list may be the token index's own."""
    if not strict and len(slot) == 1:
        return tokens.positions(slot[0])
    found = []
    for w in slot:
        if strict:
            for form in (w, w + "s", w + "es"):
                found.append(tokens.where(form))
        else:
            found.append(tokens.positions(w))
    found = [f for f in found if f]
    if len(found) == 1:
        return found[0]
    return sorted(set().union(*found))


def find(
    tokens: Tokens, phrase: Phrase, lo: int = 0, hi: int | None = None, strict: bool = False
) -> list[tuple[int, int]]:
    """Occurrences (first, last token) of the phrase in tokens [lo, hi): every slot said by a token of one sentence,
    all within len(slots) + WINDOW tokens, in any order. Linear in the occurrences of its rarest slot (× log)."""
    hi = len(tokens.tokens) if hi is None else hi
    positions = []
    for s in phrase.slots:
        pos = tokens.positions(s[0]) if len(s) == 1 and not strict else _slot_positions(tokens, s, strict)  # most slots
        if not pos:
            return []  # a slot not said: the slots after it need not be looked up
        positions.append(pos)
    if len(positions) == 1:  # one slot: each of its tokens in [lo, hi)
        pos = positions[0]
        return [(p, p) for p in pos[bisect.bisect_left(pos, lo) : bisect.bisect_left(pos, hi)]]
    reach = len(phrase.slots) + WINDOW
    sizes = list(map(len, positions))
    anchor = sizes.index(min(sizes))  # the rarest slot (the first of the rarest): no key function called per slot
    others = positions[:anchor] + positions[anchor + 1 :]
    sentence, out = tokens.sentence, []
    for p in positions[anchor][bisect.bisect_left(positions[anchor], lo) :]:
        if p >= hi:
            break
        first = last = p
        for pos in others:  # the nearest token of each other slot in p's sentence (the earlier one on a tie)
            j = bisect.bisect_left(pos, p)
            q = pos[j - 1] if j else None
            if q is not None and not (lo <= q and p - q <= reach and sentence[q] == sentence[p]):
                q = None
            if j < len(pos):
                r = pos[j]
                if r < hi and r - p <= reach and sentence[r] == sentence[p] and (q is None or r - p < p - q):
                    q = r
            if q is None:
                break
            first, last = min(first, q), max(last, q)
        else:
            if last - first <= reach:
                out.append((first, last))
    return out
