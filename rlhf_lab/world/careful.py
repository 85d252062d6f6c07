"""The `careful` gold's judgment of form: how well a text keeps to the tiny world's grammar.

`quality(text).q` ∈ [0, 1] and `careful_score(prompts, completions)` = q · vader(completion) − (1 − q);
the formula, the thresholds below and the reasons for them are in `rlhf_lab.world.gold`'s docstring.
A change to what it computes changes every gold-scored artifact: raise the cache `VERSION` of the stages
that score with gold (collect, rl, bon, eval) with it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from rlhf_lab.world import lexicon
from rlhf_lab.world.corpus import generate_documents
from rlhf_lab.world.gold import vader_score

GRAMMAR_DOCUMENTS = 20_000  # documents the grammar's trigrams are learned from (~1 s, once per process)
GRAMMAR_SEED = 1_000_003  # their seed, independent of the world config
GRAMMATICAL = (0.6, 0.9)  # ramp of g, the grammatical share of trigrams
WORDS = (0.8, 1.0)  # ramp of 1 − u, the share of known words
FRESH = (0.35, 0.65)  # ramp of 1 − r, the share of trigrams said for the first time
UNFINISHED = 0.5  # factor of a text whose last sentence does not end

TOKEN = re.compile(r"[a-z]+|[^\sa-z]")  # of lowercased text: a word, or any other single character
ENDS = frozenset(".!")
START, END = "<s>", "</s>"


# ---------------------------------------------------------------------------------------- grammar
def tokens(text: str) -> list[str]:
    """Lowercased words; punctuation and any other non-space character are words of their own."""
    return TOKEN.findall(text.lower())


def sentences(words: list[str]) -> tuple[list[list[str]], bool]:
    """The words split into sentences (each ends with "." or "!"), and whether the last one ends."""
    out, current = [], []
    for w in words:
        current.append(w)
        if w in ENDS:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out, not current


@dataclass(frozen=True)
class Grammar:
    """What the world's grammar produces: its vocabulary and its trigrams of symbols, each encoded as
    one integer in base `base`. A word's symbol is the lexicon list it belongs to when it belongs to
    exactly one (every first name is FIRST_NAMES), else the word itself."""

    vocabulary: frozenset[str]
    symbols: dict[str, int]  # word (or START/END) → its symbol; a non-word's is base − 1, in no trigram
    alternatives: dict[str, tuple[int, ...]]  # a word of several lists → its symbol, then theirs
    trigrams: frozenset[int]
    longest: int  # words in the longest sentence
    base: int  # symbols + 1

    def grammatical(self, sentence: list[str], finished: bool) -> int:
        """How many of the sentence's trigrams the grammar produces; none when it is longer than the
        grammar's longest sentence."""
        return 0 if len(sentence) > self.longest else sum(self.marks(sentence, finished))

    def marks(self, sentence: list[str], finished: bool) -> list[bool]:
        """Whether the grammar produces each of the sentence's trigrams (START, START before it and END
        after it when it is finished), in order; a word of several lists may stand for any of them."""
        words = [START, START, *sentence, END] if finished else [START, START, *sentence]
        unknown, get = self.base - 1, self.symbols.get
        ids = [get(w, unknown) for w in words]
        k, seen, out = self.base, self.trigrams, []
        for i in range(len(ids) - 2):
            if (ids[i] * k + ids[i + 1]) * k + ids[i + 2] in seen:
                out.append(True)
                continue
            alternatives = [self.alternatives.get(w) for w in words[i : i + 3]]
            found = False
            if any(alternatives):
                a, b, c = (alt or (id,) for alt, id in zip(alternatives, ids[i : i + 3], strict=True))
                found = any((x * k + y) * k + z in seen for x in a for y in b for z in c)
            out.append(found)
        return out


def _lexicon_lists() -> dict[str, tuple[str, ...]]:
    return {name: v for name, v in vars(lexicon).items() if name.isupper() and isinstance(v, tuple)}


@functools.lru_cache(maxsize=1)
def grammar() -> Grammar:
    """The world's grammar, learned from GRAMMAR_DOCUMENTS generated documents (once per process, ~1 s)."""
    lists = _lexicon_lists()
    memberships: dict[str, set[str]] = {}  # single word → the lists that hold it
    for name, entries in lists.items():
        for entry in entries:
            if len(entry.split()) == 1:
                memberships.setdefault(entry.lower(), set()).add(f"<{name}>")
    documents = [sentences(tokens(d))[0] for d in generate_documents(GRAMMAR_DOCUMENTS, GRAMMAR_SEED)]
    vocabulary = {w for entries in lists.values() for entry in entries for w in tokens(entry)}
    vocabulary |= {w for doc in documents for s in doc for w in s}

    names = sorted({f"<{name}>" for name in lists} | vocabulary | {START, END})
    index = {name: i for i, name in enumerate(names)}
    symbols = {
        w: index[next(iter(memberships[w]))] if len(memberships.get(w, ())) == 1 else index[w]
        for w in [*vocabulary, START, END]
    }
    # A word of several lists (violin: an instrument, an object, a title noun) is learned as itself,
    # since which list it came from is not known, and may stand for any of its lists when judged.
    alternatives = {
        w: (symbols[w], *sorted(index[name] for name in memberships[w]))
        for w in vocabulary
        if len(memberships.get(w, ())) > 1
    }
    k = len(names) + 1  # the last symbol is a non-word's
    trigrams, longest = set(), 0
    for doc in documents:
        for s in doc:
            longest = max(longest, len(s))
            ids = [symbols[START], symbols[START], *(symbols[w] for w in s), symbols[END]]
            trigrams.update((a * k + b) * k + c for a, b, c in zip(ids, ids[1:], ids[2:], strict=False))
    return Grammar(frozenset(vocabulary), symbols, alternatives, frozenset(trigrams), longest, k)


# ---------------------------------------------------------------------------------------- quality
def _ramp(x: float, lo: float, hi: float) -> float:
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


@dataclass(frozen=True)
class Quality:
    """The form of a text: q and the measures it is made of (`rlhf_lab.world.gold`)."""

    q: float
    grammatical: float  # g
    nonwords: float  # u
    repeated: float  # r
    finished: bool


def quality(text: str) -> Quality:
    """How well-formed a text of the tiny world is (`rlhf_lab.world.gold`): 1 for the world's reviews."""
    words = tokens(text)
    if not words:
        return Quality(0.0, 0.0, 0.0, 0.0, False)
    g = grammar()
    split, finished = sentences(words)
    ends = [True] * (len(split) - 1) + [finished]  # only the last sentence may be unfinished
    total = sum(len(s) + end for s, end in zip(split, ends, strict=True))  # trigrams, with the marks
    good = sum(g.grammatical(s, end) for s, end in zip(split, ends, strict=True))
    grammatical = good / total
    nonwords = sum(w not in g.vocabulary for w in words) / len(words)
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    repeated = 1 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
    q = (
        _ramp(grammatical, *GRAMMATICAL)
        * _ramp(1 - nonwords, *WORDS)
        * _ramp(1 - repeated, *FRESH)
        * (1.0 if finished else UNFINISHED)
    )
    return Quality(q, grammatical, nonwords, repeated, finished)


def careful_score(prompts: list[str], completions: list[str]) -> list[float]:
    """The `careful` gold: q · vader(completion) + (1 − q) · (−1), q the form of prompt + completion."""
    sentiment = vader_score(completions)
    qs = [quality(p + c).q for p, c in zip(prompts, completions, strict=True)]
    return [q * s - (1 - q) for q, s in zip(qs, sentiment, strict=True)]
