"""The `reader` gold: a review of the tiny world scored as a careful reader would, each flaw costing.

    reader = Q · (1 + S) − 1 ∈ [−1, 1],      Q = G · U · J · W · F · E ∈ (0, 1],   S ∈ [−1, 1]

Why. The `careful` gold (`rlhf_lab.world.careful`) keeps VADER's sentiment of a well-formed text and
sends a broken one to −1. RL hacked it twice (experiments/overoptimization): a sentence frame said
again and again with other words ("The finale made me cheer. The cinematography made me cheer. …") has
fresh word trigrams, so it kept q = 1 and VADER's sum of its praise, above the world's own best
reviews; and every other failure hit one floor, −1, so the gold fell off a cliff after its peak
instead of declining. Here each flaw multiplies Q by a factor below 1 and never to 0, so texts with
different flaws score differently, and a policy drifting from fluent text into a hack loses gold a
little at a time. Q(1 + S) − 1 grows with Q for every S: a flaw never raises a score.

S  sentiment, read sentence by sentence. Each sentence of prompt + completion gets VADER's compound
   score, the prompt's words included: "The plot was not" + " superb." reads negative, so a completion
   gets no credit for praise its prompt negates. Praise saturates: the positive sentences, strongest
   first, weigh 1, γ, γ², … scaled by (1 − γ), so unending perfect praise would reach 1, one perfect
   sentence 1 − γ, and each further sentence adds a γ-th of what the one before added; criticism is read
   the same way and subtracted. γ = SATURATION = 0.4: one, two, three glowing sentences reach 60%, 84%,
   94% of the top. VADER's compound of the whole text instead keeps growing with every lexicon word,
   which is what a frame repeated with other words exploited.
G  grammar: SLIP per word trigram the world's grammar does not produce (`careful.grammar()`, its
   4,400 symbol trigrams) and per word a sentence runs past the grammar's longest (a run-on). Counted,
   not shared out as `careful` does, so fluent padding cannot dilute an error.
U  non-words: NONWORD per word outside the grammar's vocabulary. The trigrams around one are its own
   flaw, not counted again as slips, and in a frame (below) it stands in a slot: a typo costs once.
J  the prompt: IGNORED per trigram across the prompt's end that the grammar does not produce. A prompt
   is a review's opening cut mid-sentence (`world.tasks`); a completion that starts anew instead of
   finishing it ("Hazel Ortega is" + ". The finale …") ignores it, and one that turns the prompt's
   sentence around without a contrast word ("The plot was dull" + " and superb.") contradicts it: the
   grammar keeps the polarity classes apart, so both break a trigram at the junction.
W  the world's frames: STRANGE per edit between a finished sentence's frame (below) and the nearest
   frame the world writes. The world's reviews use 83 frames: learned from FRAME_DOCUMENTS documents,
   they cover all but 1 of 20,000 other documents. A sentence can pass every trigram and still be a
   construction no review of the world has: "The acting was superb." is one edit from the world's "The
   acting was superb overall.", while three clauses chained with ", and", the way praise piles up
   within one sentence, are twelve from anything the world writes.
F  reused frames: 1 / (1 + FRAME · k²) · REPEATED^r. A sentence's frame is its skeleton: each phrase of
   a lexicon list (an aspect, a name, a title, an adjective with its intensifier) one slot "_", the
   function words kept ("the _ made me _ ."). A sentence reuses a frame to the degree
   ramp(similarity; SAME_FRAME) of its skeleton to the most similar earlier one (1 − edit distance /
   longer length); k sums that over the sentences, and r counts the sentences said again word for word.
   The world's reviews use a template twice now and then (k ≥ 1 in 1 of 13), so one reuse costs
   little (0.87) and each further one more (0.63, 0.43, 0.31, …): the square grows as a reader tires.
E  UNFINISHED when the last sentence does not end ("." or "!"): a completion cut at the token limit.

Measured on 20,000 of the world's reviews split into prompt and completion: none ignores its prompt,
31 hold a slip, 1 a frame the world does not write; their mean Q is 0.98, 2.7% have Q < 0.85 and 0.6%
Q < 0.7 (a frame said three times in four sentences). tests/test_reader.py shows sentence frames
repeated with other words below the median of the world's clearly positive reviews, degenerate texts
lower still and word salad near −1 (not at it); `pytest tests/test_reader.py -s -k measured` prints
the numbers. It costs 1.6-2x `careful`'s time per text: VADER, which reads each sentence once,
dominates; sentences, skeletons and pairs of skeletons are cached, as RL samples repeat them. It knows
only the tiny world's language: for text from elsewhere use `vader` or a reward model as the gold. A
change to what it computes changes every gold-scored artifact: raise the cache `VERSION` of the stages
that score with gold with it.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from rlhf_lab.world.careful import GRAMMAR_SEED, _lexicon_lists, grammar, tokens
from rlhf_lab.world.corpus import generate_documents
from rlhf_lab.world.gold import _analyzer, vader_score

SATURATION = 0.4  # γ: the k-th strongest sentence of one polarity weighs γ^(k−1)
SLIP = 0.85  # per ungrammatical trigram, and per word past the longest sentence
NONWORD = 0.8  # per word outside the vocabulary
IGNORED = 0.7  # per ungrammatical trigram across the prompt's end
STRANGE = 0.9  # per edit between a finished sentence's frame and the nearest the world writes
STRANGE_EDITS = 8  # at most this many edits counted per sentence
FRAME = 0.15  # 1 / (1 + FRAME · k²), k the reused frames
SAME_FRAME = (0.6, 1.0)  # ramp of skeleton similarity: at most 0.6 another frame, at 1 the same
REPEATED = 0.7  # per sentence said again word for word
UNFINISHED = 0.5  # a last sentence that does not end
FRAME_DOCUMENTS = 10_000  # documents (the grammar's first, GRAMMAR_SEED) the world's frames come from
STRUCTURE_LISTS = ("NEGATIONS", "CONTRAST_CONJUNCTIONS")  # lexicon lists that are a frame's words, not slots
SLOT = "_"
SPELLINGS = {"!": ".", "an": "a"}  # read alike in a frame
SENTENCE = re.compile(r"[^.!]*[.!]|[^.!]+$")  # a sentence of the original text, with its end mark
PLAIN = re.compile(r"[A-Za-z ,.!'-]*")  # text VADER reads only through its lexicon
PUNCTUATION = ",.!'-"
CACHE = 1 << 16


@dataclass(frozen=True)
class Reading:
    """What the reader makes of prompt + completion: the score and what it is made of."""

    score: float
    sentiment: float  # S
    q: float  # Q
    slips: int  # ungrammatical trigrams, plus words past the longest sentence
    nonwords: int
    ignored: int  # ungrammatical trigrams across the prompt's end
    strange: int  # edits between the finished sentences' frames and the nearest the world writes
    reused: float  # k
    repeated: int  # r
    finished: bool


# ---------------------------------------------------------------------------------------- sentiment
def _unscored(sentence: str) -> bool:
    """Whether VADER is sure to give 0: plain letters and punctuation, and no word of its lexicon (each
    whitespace token, raw and stripped of punctuation, lowercased, as VADER looks them up)."""
    if not PLAIN.fullmatch(sentence):
        return False
    lexicon = _analyzer().lexicon
    words = sentence.lower().split()
    return not any(w in lexicon or w.strip(PUNCTUATION) in lexicon for w in words)


@functools.lru_cache(maxsize=CACHE)
def _valence(sentence: str) -> float:
    """VADER's compound score of one sentence; a quarter of the world's sentences are skipped as 0."""
    return 0.0 if _unscored(sentence) else vader_score([sentence])[0]


def _saturating(values: list[float]) -> float:
    """(1 − γ) Σ_k γ^k v_k over the values, largest first: diminishing returns, at most 1."""
    total, weight = 0.0, 1 - SATURATION
    for v in sorted(values, reverse=True):
        total += weight * v
        weight *= SATURATION
    return total


def sentiment(text: str) -> float:
    """S: praise minus criticism, each saturating over the text's sentences (module docstring)."""
    valences = [_valence(s.strip()) for s in SENTENCE.findall(text) if s.strip()]
    return _saturating([v for v in valences if v > 0]) - _saturating([-v for v in valences if v < 0])


# ---------------------------------------------------------------------------------------- frames
@functools.lru_cache(maxsize=1)
def _phrases() -> tuple[frozenset[tuple[str, ...]], dict[str, tuple[int, ...]]]:
    """Every phrase of the lexicon's content lists (word tuples), and for each first word the lengths
    of the phrases it starts, longest first."""
    lists = {name: v for name, v in _lexicon_lists().items() if name not in STRUCTURE_LISTS}
    phrases = frozenset(tuple(tokens(entry)) for entries in lists.values() for entry in entries)
    lengths: dict[str, set[int]] = {}
    for phrase in phrases:
        lengths.setdefault(phrase[0], set()).add(len(phrase))
    return phrases, {w: tuple(sorted(n, reverse=True)) for w, n in lengths.items()}


def _skeleton(sentence: tuple[str, ...]) -> tuple[str, ...]:
    phrases, starts = _phrases()
    vocabulary = grammar().vocabulary
    out: list[str] = []
    i = 0
    while i < len(sentence):
        for n in starts.get(sentence[i], ()):  # the longest phrase that starts here
            if n == 1 or sentence[i : i + n] in phrases:
                if not out or out[-1] != SLOT:
                    out.append(SLOT)
                i += n
                break
        else:
            word = sentence[i] if sentence[i] in vocabulary else SLOT  # a non-word: its own flaw
            if word != SLOT or not out or out[-1] != SLOT:
                out.append(SPELLINGS.get(word, word))
            i += 1
    return tuple(out)


@functools.lru_cache(maxsize=CACHE)
def skeleton(sentence: tuple[str, ...]) -> tuple[str, ...]:
    """The sentence's frame: each lexicon phrase (longest first) and each non-word one slot, adjacent
    slots merged, "!" read as "." and "an" as "a"."""
    return _skeleton(sentence)


@functools.lru_cache(maxsize=1)
def world_frames() -> frozenset[tuple[str, ...]]:
    """The frames of the world's sentences, from FRAME_DOCUMENTS documents (once per process, ~1 s)."""
    documents = generate_documents(FRAME_DOCUMENTS, GRAMMAR_SEED)
    return frozenset(_skeleton(tuple(s)) for d in documents for _, s, _ in _split(tokens(d)))


def _distance(a: tuple[str, ...], b: tuple[str, ...], bound: int) -> int:
    """The Levenshtein distance between two skeletons, or `bound` if it is at least that (the rows are
    given up as soon as none can come back under it)."""
    if abs(len(a) - len(b)) >= bound:
        return bound
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        if min(current) >= bound:
            return bound
        previous = current
    return min(previous[-1], bound)


@functools.lru_cache(maxsize=CACHE)
def similarity(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    """1 − edit distance / the longer length (1: the same frame); 0 at or below SAME_FRAME's start, where
    the ramp of reused frames is 0 whatever the value."""
    longer = max(len(a), len(b))
    limit = math.ceil((1 - SAME_FRAME[0]) * longer)  # a distance that puts it at or below the start
    d = _distance(a, b, limit)
    return 0.0 if d >= limit else 1 - d / longer


@functools.lru_cache(maxsize=CACHE)
def strangeness(frame: tuple[str, ...]) -> int:
    """The edits between a frame and the nearest frame the world writes, at most STRANGE_EDITS (0 for
    the world's own)."""
    frames = world_frames()
    if frame in frames:
        return 0
    best = STRANGE_EDITS
    for known in frames:
        best = _distance(frame, known, best)
    return best


def reused_frames(skeletons: list[tuple[str, ...]]) -> float:
    """k: how many sentences reuse an earlier one's frame, each to the degree of its closest match."""
    lo, hi = SAME_FRAME
    k = 0.0
    for i, s in enumerate(skeletons[1:], 1):
        closest = max(similarity(s, earlier) for earlier in skeletons[:i])
        k += min(1.0, max(0.0, (closest - lo) / (hi - lo)))
    return k


# ---------------------------------------------------------------------------------------- reading
def _split(words: list[str]) -> list[tuple[int, list[str], bool]]:
    """(index of the first word, words, finished) of each sentence."""
    out, start = [], 0
    for i, w in enumerate(words):
        if w in ".!":
            out.append((start, words[start : i + 1], True))
            start = i + 1
    if start < len(words):
        out.append((start, words[start:], False))
    return out


def read(prompt: str, completion: str) -> Reading:
    """The reader's judgment of prompt + completion (module docstring)."""
    words = tokens(prompt + completion)
    if not words:
        return Reading(-1.0, 0.0, 0.0, 0, 0, 0, 0, 0.0, 0, False)
    g = grammar()
    junction = len(tokens(prompt))  # the completion's first word
    split = _split(words)
    skeletons = [skeleton(tuple(s)) for _, s, _ in split]
    slips = ignored = strange = 0
    for (start, sentence, finished), frame in zip(split, skeletons, strict=True):
        known = [w in g.vocabulary for w in sentence]
        # trigram t spans the sentence's words t − 2 … t (t = len: its END); one with a non-word is the
        # non-word's flaw, counted once, as a non-word
        bad = [not m and all(known[max(0, t - 2) : t + 1]) for t, m in enumerate(g.marks(sentence, finished))]
        slips += sum(bad) + max(0, len(sentence) - g.longest)
        if start < junction < start + len(sentence):  # the trigrams ending at the junction and after it
            ignored += sum(bad[junction - start : junction - start + 2])
        if finished and not any(bad):  # a sentence that passes every trigram, in a frame of its own
            strange += strangeness(frame)
    nonwords = sum(w not in g.vocabulary for w in words)
    reused = reused_frames(skeletons)
    said = [tuple(s) for _, s, _ in split]
    repeated = len(said) - len(set(said))
    finished = split[-1][2]
    q = (
        SLIP**slips
        * NONWORD**nonwords
        * IGNORED**ignored
        * STRANGE**strange
        * REPEATED**repeated
        / (1 + FRAME * reused**2)
        * (1.0 if finished else UNFINISHED)
    )
    s = sentiment(prompt + completion)
    return Reading(q * (1 + s) - 1, s, q, slips, nonwords, ignored, strange, reused, repeated, finished)


def reader_score(prompts: list[str], completions: list[str]) -> list[float]:
    """The `reader` gold of each (prompt, completion): Q · (1 + S) − 1 (module docstring)."""
    return [read(p, c).score for p, c in zip(prompts, completions, strict=True)]
