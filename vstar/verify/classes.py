"""Checks of labels said in words — class, sequence, text — read the way a judge reads an answer.

The judge reads the conclusion: the sentence after "Answer:" (or "so", "therefore"), else the last sentence that
commits to an answer. A class passes when the conclusion says the label as a phrase (any inflection or word order,
one alternative of an "X or Y" or slash name, no bracketed qualifier needed), not negated in its clause, and does not
also offer another class of its `choices` as an alternative; a class named in a negation, a retraction, a subordinate
clause ("while the crowd is clapping"), after a preposition ("for planting trees"), inside the label's own name or
its subject, or in a restated list of options is no alternative. An answer whose only mention of the label is a list of
every option commits to none.

>>> from vstar.schema import Label
>>> from vstar.verify.answer import Answer, Context
>>> lab = Label(name="a", type="class", value="playing guitar", choices=("playing guitar", "playing ukulele", "singing"))
>>> check_class(Answer("He sings along, while playing guitar."), lab, Context()).passed
True
>>> check_class(Answer("Answer: playing guitar or playing ukulele."), lab, Context()).reason
"'playing guitar' found ('playing'→'playing' (100), 'guitar'→'guitar' (100)) but the answer also names 'playing ukulele'"
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from vstar.schema import Label
from vstar.verify.answer import Answer, Context, LabelVerdict, Reading, verdict
from vstar.verify.answer import expand_name as expand
from vstar.verify.names import Phrase, find, phrases
from vstar.verify.text import Tokens, content_words, ratio, stems

LAST_SENTENCES = 10  # without an answer marker, the conclusion is sought among the last sentences
MAX_SENTENCE = 120  # tokens of a sentence read as a conclusion (a model's run-on output is not one a judge reads)
SEPARATORS = frozenset(["or", "and", "either", "maybe", "possibly", "perhaps", "probably", "also", "even"])
SUBORDINATORS = frozenset(
    [
        "while",
        "as",
        "when",
        "because",
        "since",
        "where",
        "which",
        "who",
        "whereas",
        "although",
        "though",
        "if",
        "whether",
    ]
)
PREPOSITIONS = frozenset(
    ["for", "of", "from", "by", "about", "after", "before", "without", "to", "like", "than", "with", "during", "into"]
)
RETRACTIONS = frozenset(["thought", "considered", "assumed", "guessed", "mistook", "initially", "seemed"])
HEDGES = frozenset(["could", "might", "may", "possibly", "perhaps", "unsure"])
UNCOMMITTED_WORDS = HEDGES | {"sure", "or"}
YES, NO = frozenset({"yes", "same", "identical"}), frozenset({"no", "different", "differ", "differs", "distinct"})


@dataclass(frozen=True)
class Mention:
    name: str  # the label's value or synonym, or another class
    first: int
    last: int
    own: bool  # the label (not another class)


def abbreviations(label: Label) -> tuple[tuple[str, str], ...]:
    return label.abbreviations


@lru_cache(maxsize=16)
def _class_index(choices: tuple[str, ...], abbrev: tuple) -> dict[str, list[int]]:
    """Word (and its plural) → the choices whose first slot it can say: candidates to look for in a sentence."""
    index: dict[str, list[int]] = {}
    for k, c in enumerate(choices):
        for p in phrases(expand(c, abbrev)):
            for w in p.slots[0]:
                for form in (w, w + "s", w + "es"):
                    index.setdefault(form, []).append(k)
    return index


def _sentences(r: Reading) -> list[tuple[int, int]]:
    """Token ranges to read, in order: the conclusion's sentence and those after it (an answer of several labels:
    "Answer: action: open a door; action: close a door"), else the last sentences from the end backward."""
    t, out = r.tokens, []
    if r.conclusion:
        a = r.conclusion[0]
        while a < len(t.tokens) and len(out) < LAST_SENTENCES:
            b = t.sentence_range(t.sentence[a])[1]
            out.append((a, min(b, a + MAX_SENTENCE)))
            a = b
        return out
    end = len(t.tokens)
    while end > 0 and len(out) < LAST_SENTENCES:
        start = t.sentence_range(t.sentence[end - 1])[0]
        out.append((max(start, end - MAX_SENTENCE), end))
        end = start
    return out


def _own_stems(label: Label, abbrev: tuple) -> set[str]:
    words = [
        w for name in (label.value, *label.synonyms) for p in phrases(expand(name, abbrev)) for s in p.slots for w in s
    ]
    subject = content_words(expand(label.subject, abbrev)) if label.subject else []
    return {s for w in words + subject for s in stems(w)}


def _nested(phrase_set: tuple[Phrase, ...], own: set[str]) -> bool:
    """Another class said entirely by the label's own words (or its subject's): "playing guitar" in "playing bass
    guitar", the question's own step or box."""
    return all(all(any(stems(w) & own for w in slot) for slot in p.slots) for p in phrase_set)


def _mentions(t: Tokens, a: int, b: int, label: Label, abbrev: tuple, strict: bool) -> list[Mention]:
    out = [
        Mention(name, first, last, True)
        for name in (label.value, *label.synonyms)
        for p in phrases(expand(name, abbrev))
        for first, last in find(t, p, a, b)
    ]
    if strict:
        index, own = _class_index(label.choices, abbrev), None
        candidates = {k for tok in set(t.tokens[a:b]) for k in index.get(tok, ())}
        for k in sorted(candidates):
            other = label.choices[k]
            if other == label.value or other in label.synonyms:
                continue
            ps = phrases(expand(other, abbrev))
            hits = [h for p in ps for h in find(t, p, a, b, strict=True)]
            if hits:
                own = own if own is not None else _own_stems(label, abbrev)
                if not _nested(ps, own):
                    out += [Mention(other, f, last, False) for f, last in hits]
    # a mention inside a longer one is part of it: "playing guitar" in "playing bass guitar"
    spans = {(m.first, m.last) for m in out}
    inside = {
        (f, last) for f, last in spans for f2, l2 in spans if (f2, l2) != (f, last) and f2 <= f and last <= l2
    }  # quadratic in the mentions of one sentence only
    out = [m for m in out if (m.first, m.last) not in inside]
    return sorted(set(out), key=lambda m: (m.first, m.last, not m.own, m.name))


def _listed(t: Tokens, mentions: list[Mention]) -> set[Mention]:
    """Mentions in a run of three or more coordinated classes ("left, right, up or down"): a list of options."""
    out, run = set(), mentions[:1]
    for m in mentions[1:]:
        prev = run[-1]
        gap = t.tokens[prev.last + 1 : m.first]
        if m.first > prev.last and len(gap) <= 3 and all(g in SEPARATORS for g in gap):
            run.append(m)
        else:
            out |= _options(run)
            run = [m]
    return out | _options(run)


def _options(run: list[Mention]) -> set[Mention]:
    """A run of three or more classes, not all the label's own names ("cup/glass/bottle"), is a list of options."""
    return set(run) if len(run) >= 3 and any(not m.own for m in run) else set()


def _alternative(t: Tokens, m: Mention, own: set[str]) -> bool:
    """Whether another class's mention offers it as an answer (not a detail, a negation or a retraction)."""
    before = t.tokens[t.clause_start(m.first) : m.first]
    if t.negated(m.first) or any(w in SUBORDINATORS or w in RETRACTIONS for w in before):
        return False
    if m.first and t.tokens[m.first - 1] in PREPOSITIONS and t.clause_start(m.first) < m.first:
        return False
    return not all(stems(t.tokens[i]) & own for i in range(m.first, m.last + 1))


def _found(t: Tokens, m: Mention, abbrev: tuple) -> tuple[str, int]:
    """ "'playing'→'playing' (100), …" for a mention of the label, and its lowest word ratio."""
    parts, low = [], 100
    for p in phrases(expand(m.name, abbrev)):
        toks = t.tokens[m.first : m.last + 1]
        pairs = []
        for slot in p.slots:
            tok = next((x for x in toks if any(stems(x) & stems(w) for w in slot)), None)
            if tok is None:
                break
            word = next(w for w in slot if stems(tok) & stems(w))
            pairs.append((word, tok, ratio(word, tok)))
        else:
            parts = [f"'{w}'→'{x}' ({r})" for w, x, r in pairs]
            low = min(r for *_, r in pairs)
            break
    return ", ".join(parts), low


def _not_found(t: Tokens, label: Label, abbrev: tuple, negated: list[tuple[Mention, Tokens]]) -> str:
    if negated:
        m, tt = negated[0]
        ws = []
        for i in range(m.first, m.last + 1):
            if tt.tokens[i] not in ("a", "an", "the"):
                ws.append(f"{tt.tokens[i]} (negated: '{' '.join(tt.tokens[max(0, i - 3) : i + 1])}')")
        return f"'{m.name}': not found: {', '.join(ws)}"
    p = phrases(expand(label.value, abbrev))[0]
    missing = [s[0] for s in p.slots if not any(t.positions(w) for w in s)] or [s[0] for s in p.slots]
    return f"'{label.value}': not found: {', '.join(missing)}"


def check_class(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    if label.value.lower() in ("yes", "no") and set(c.lower() for c in label.choices) <= {"yes", "no"}:
        return check_yes_no(answer, label, ctx)
    abbrev = abbreviations(label)
    r = answer.reading(abbrev)
    t, strict = r.tokens, ctx.cfg.class_strict and bool(label.choices)
    own, negated = None, []
    for a, b in _sentences(r):
        mentions = _mentions(t, a, b, label, abbrev, strict)
        listed = _listed(t, mentions) if strict else set()
        label_hits = [m for m in mentions if m.own and m not in listed and not t.negated(m.first)]
        negated += [(m, t) for m in mentions if m.own and t.negated(m.first)]
        if any(not m.own for m in mentions):
            own = own if own is not None else _own_stems(label, abbrev)
        others = [m for m in mentions if not m.own and m not in listed and _alternative(t, m, own)]
        in_list = [m for m in mentions if m in listed]
        if not (label_hits or others or in_list):
            continue  # this sentence commits to nothing: read the next one
        if not label_hits:
            if others or in_list:
                names = list(dict.fromkeys(m.name for m in others + in_list if not m.own))
                if any(m.own for m in in_list):
                    found, score = _found(t, next(m for m in in_list if m.own), abbrev)
                    reason = f"'{label.value}' found ({found}) but the answer also names {', '.join(map(repr, names))}"
                    return verdict(label, label.value, score, ctx.cfg.class_min_ratio, False, reason)
                return verdict(label, None, 0, ctx.cfg.class_min_ratio, False, f"the answer names {names[0]!r} instead")
            break
        m = label_hits[0]
        found, score = _found(t, m, abbrev)
        if others:
            names = ", ".join(map(repr, dict.fromkeys(o.name for o in others)))
            reason = f"'{m.name}' found ({found}) but the answer also names {names}"
            return verdict(label, m.name, score, ctx.cfg.class_min_ratio, False, reason)
        return verdict(label, m.name, score, ctx.cfg.class_min_ratio, True, f"found {found}")
    return verdict(label, None, 0, ctx.cfg.class_min_ratio, False, _not_found(t, label, abbrev, negated))


def check_yes_no(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    """A yes/no class: the polarity the conclusion commits to ("they are the same" is yes, "not the same" no)."""
    r = answer.reading(())
    t = r.tokens
    yes = YES | ({s.lower() for s in label.synonyms} if label.value.lower() == "yes" else set())
    no = NO | ({s.lower() for s in label.synonyms} if label.value.lower() == "no" else set())
    for a, b in _sentences(r):
        said = set()
        for i in range(a, b):
            w = t.tokens[i]
            if w in ("yes", "no") and not (t.clause_start(i) == i or i == a):
                continue  # "no other object": a determiner, not an answer
            if w in yes or w in no:
                said.add((w in yes) != t.negated(i))
        if not said:
            continue
        if len(said) == 2:
            return verdict(label, None, 0, 1, False, "the answer says both yes and no")
        got = "yes" if said.pop() else "no"
        ok = got == label.value.lower()
        return verdict(label, got, float(ok), 1, ok, f"the answer says {got}")
    return verdict(label, None, 0, 1, False, "no yes or no in the answer")


# ---- sequence ------------------------------------------------------------------------------------------


def _uncommitted_sentences(t: Tokens) -> set[int]:
    """Sentences that do not commit: hedged ("could be any of these") or a list of options (3+ commas and an "or").
    Read only where the hedges, "not sure" and "or" are, clauses counted only where an "or" is."""
    hedged, ors = set(), set()
    for w in t.vocabulary.intersection(UNCOMMITTED_WORDS):  # most answers have none of them
        for i in t.where(w):
            if t.tokens[i] != w:
                continue  # a hyphenated "o-r" joined
            if w == "or":
                ors.add(t.sentence[i])
            elif w != "sure" or (i and t.tokens[i - 1] == "not"):
                hedged.add(t.sentence[i])
    lists = {s for s in ors if len(t.clause_firsts(*t.sentence_range(s))) >= 4}
    return hedged | lists


@lru_cache(maxsize=64)
def _modifiers(abbrev: tuple) -> frozenset[str]:
    """The words of a domain's abbreviations written out ("armstand", "handstand", "somersaults")."""
    return frozenset(w for _, full in abbrev for w in full.lower().replace("/", " ").split())


def _item_hits(t: Tokens, item: str, abbrev: tuple, lo: int, hi: int, not_ok: set[int]) -> list[tuple[int, int]]:
    """Occurrences of a sequence item that say it happened: not negated, in a committed sentence, not part of a longer
    item (a word of the domain's abbreviations right before it: "armstand back" is not "back")."""
    modifiers, ps = _modifiers(abbrev), phrases(expand(item, abbrev))
    out = []
    for p in ps:
        for first, last in find(t, p, lo, hi):
            before = t.tokens[first - 1] if first else ""
            if t.negated(first) or t.sentence[first] in not_ok:
                continue
            if before in modifiers and not any(before in s for q in ps for s in q.slots):  # not a word of the item
                continue
            out.append((first, last))
    return sorted(set(out))


def check_sequence(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    abbrev = abbreviations(label)
    r = answer.reading(abbrev)
    t = r.tokens
    not_ok = _uncommitted_sentences(t)
    hits = {item: _item_hits(t, item, abbrev, 0, len(t.tokens), not_ok) for item in dict.fromkeys(label.value)}
    lo = 0
    if r.rest is not None and any(h[0] >= r.rest[0] for hs in hits.values() for h in hs):
        lo = r.rest[0]  # the answer's conclusion lists steps: it is the answer
    found, prev = [], (lo - 1, lo - 1)
    for item in label.value:
        nxt = next(((f, last) for f, last in hits[item] if f > prev[0] and last >= prev[1] and f >= lo), None)
        if nxt is None:
            anywhere = any(f >= lo for f, _ in hits[item])
            why = (
                f"'{item}' appears only before '{found[-1]}' (out of order)"
                if anywhere and found
                else f"'{item}' not found"
            )
            score = len(found) / len(label.value)
            return verdict(label, found, score, 1.0, False, f"{len(found)} of {len(label.value)} items in order; {why}")
        found.append(item)
        prev = nxt
    return verdict(label, found, 1.0, 1.0, True, f"all {len(found)} items found in order")


# ---- text ----------------------------------------------------------------------------------------------


def _coordinated(t: Tokens, first: int, last: int) -> bool:
    """Offered with something else: "the clothes or the pillow", "the laptop, the door, the box, the fridge"."""
    after = t.tokens[last + 1 : last + 2]
    before = [w for w in t.tokens[max(t.clause_start(first), first - 3) : first] if w not in ("the", "a", "an")]
    if after == ["or"] or (before and before[-1] == "or"):
        return True
    a, b = t.sentence_range(t.sentence[first])
    starts = [*t.clause_firsts(a, b), b]
    return sum(1 for x, y in zip(starts, starts[1:], strict=False) if y - x <= 3) >= 3


def check_text(answer: Answer, label: Label, ctx: Context) -> LabelVerdict:
    if ctx.embed is not None:
        threshold = ctx.cfg.text_min_similarity
        a, b = ctx.embed([answer.text[answer.marker or 0 :] or answer.text, label.value])
        sim = float((a * b).sum())
        ok = sim >= threshold
        return verdict(
            label, None, sim, threshold, ok, f"embedding cosine: {sim:.3f} {'>=' if ok else '<'} {threshold:g}"
        )
    r = answer.reading(())
    t = r.tokens
    ps = phrases(label.value)
    lo, hi = r.conclusion or (0, len(t.tokens))
    found = [find(t, p, lo, hi) for p in ps]
    not_ok = _uncommitted_sentences(t) if any(found) else set()
    hits = [
        (f, last)
        for occurrences in found
        for f, last in occurrences
        if not t.negated(f) and t.sentence[f] not in not_ok and not _coordinated(t, f, last)
    ]
    if hits:
        return verdict(label, label.value, 1.0, 1.0, True, f"'{label.value}' said as a phrase, not negated")
    slots = ps[0].slots
    share = sum(any(t.positions(w) for w in s) for s in slots) / len(slots)
    how = "negated or offered with other options" if any(found) else "not said as a phrase"
    return verdict(label, None, share, 1.0, False, f"'{label.value}' {how}; {share:.2f} of its words found")
