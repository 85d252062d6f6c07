"""The tiny offline world's corpus: seeded, grammar-generated film reviews.

Every review ("document") has a sentiment leaning (positive, negative, mixed or neutral) that
correlates the sentiment of its 1-4 sentences. Sentences come from hand-written templates over
the word lists in `rlhf_lab.world.lexicon`, whose sentiment words are VADER lexicon entries, so
the gold reward (VADER's compound score, `world.gold`) tracks the grammar's intended sentiment.
Prompts and SFT pairs are cut from documents by `world.tasks`.
"""

from __future__ import annotations

import random
import re
import statistics
import string
from collections.abc import Callable, Sequence

from rlhf_lab.world import lexicon as lx
from rlhf_lab.world.gold import gold_score

LEANINGS = ("positive", "negative", "mixed", "neutral")
LEANING_WEIGHTS = (0.35, 0.35, 0.15, 0.15)
SENTENCES_PER_DOCUMENT = (1, 2, 3, 4)
SENTENCE_COUNT_WEIGHTS = (2, 3, 3, 2)

# Per leaning: (polarity, mixed) kinds of sentences and their weights.
SENTENCE_KINDS: dict[str, tuple[tuple[tuple[str, bool], ...], tuple[float, ...]]] = {
    "positive": ((("pos", False), ("neu", False), ("pos", True)), (0.70, 0.18, 0.12)),
    "negative": ((("neg", False), ("neu", False), ("neg", True)), (0.70, 0.18, 0.12)),
    "mixed": ((("pos", True), ("neg", True), ("pos", False), ("neg", False)), (3, 3, 2, 2)),
    "neutral": ((("neu", False), ("pos", False), ("neg", False)), (0.80, 0.10, 0.10)),
}

OPPOSITE = {"pos": "neg", "neg": "pos"}
SENTENCE_SPLIT = re.compile(r"(?<=[.!])\s+")
WORD = re.compile(r"\S+")


class _Writer:
    """Word-level choices of the grammar, all drawn from one `random.Random`."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, options: Sequence[str]) -> str:
        return self.rng.choice(options)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def a(self, phrase: str) -> str:
        """The phrase with its indefinite article."""
        return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"

    def adjective(self, polarity: str, boost: float = 0.3) -> str:
        """A sentiment adjective, sometimes intensified (a VADER booster) or dampened."""
        word = self.pick(lx.POSITIVE_ADJECTIVES if polarity == "pos" else lx.NEGATIVE_ADJECTIVES)
        roll = self.rng.random()
        if roll < boost:
            return f"{self.pick(lx.INTENSIFIERS)} {word}"
        if roll < boost + 0.04:
            return f"{self.pick(lx.DAMPENERS)} {word}"
        return word

    def aspect(self) -> tuple[str, str]:
        """An aspect of a film and its past-tense verb ("was"/"were")."""
        if self.chance(0.3):
            return self.pick(lx.PLURAL_ASPECTS), "were"
        return self.pick(lx.ASPECTS), "was"

    def two_aspects(self) -> tuple[tuple[str, str], tuple[str, str]]:
        first, second = self.aspect(), self.aspect()
        while second[0] == first[0]:
            second = self.aspect()
        return first, second

    def name(self) -> str:
        return f"{self.pick(lx.FIRST_NAMES)} {self.pick(lx.LAST_NAMES)}"

    def title(self) -> str:
        adjective, noun = self.pick(lx.TITLE_ADJECTIVES), self.pick(lx.TITLE_NOUNS)
        form = self.rng.random()
        if form < 0.5:
            return f"The {adjective} {noun}"
        if form < 0.8:
            return f"The {noun}"
        return f"{adjective} {noun}"

    def role(self) -> str:
        role = self.pick(lx.ROLES)
        return f"{self.pick(lx.CHARACTER_ADJECTIVES)} {role}" if self.chance(0.4) else role

    def place(self) -> str:
        return f"{self.pick(lx.PLACE_ADJECTIVES)} {self.pick(lx.PLACES)}"

    def end(self, polarity: str) -> str:
        return "!" if polarity != "neu" and self.chance(0.15) else "."

    def word(self, polarity: str, positive: Sequence[str], negative: Sequence[str]) -> str:
        return self.pick(positive if polarity == "pos" else negative)


Template = Callable[[_Writer, str], str]


# --- positive / negative sentences (mirrored by polarity) -------------------------------------


def _aspect_was(w: _Writer, pol: str) -> str:
    noun, be = w.aspect()
    where = w.pick((" overall", " throughout", f" in {w.title()}", f" in {w.title()}"))
    return f"The {noun} {be} {w.adjective(pol)}{where}{w.end(pol)}"


def _title_is(w: _Writer, pol: str) -> str:
    return f"{w.title()} is {w.a(w.adjective(pol))} {w.pick(lx.GENRES)}{w.end(pol)}"


def _i_felt_about(w: _Writer, pol: str) -> str:
    verb = w.word(pol, lx.POSITIVE_VERBS, lx.NEGATIVE_VERBS)
    boost = f"{w.pick(('really', 'deeply', 'absolutely'))} " if w.chance(0.3) else ""
    return f"I {boost}{verb} the {w.aspect()[0]} in {w.title()}{w.end(pol)}"


def _actor_as(w: _Writer, pol: str) -> str:
    return f"{w.name()} is {w.adjective(pol)} as the {w.role()}{w.end(pol)}"


def _performance(w: _Writer, pol: str) -> str:
    return f"{w.name()} gives {w.a(w.adjective(pol))} performance as the {w.role()}."


def _two_adjectives(w: _Writer, pol: str) -> str:
    noun, be = w.aspect()
    return f"The {noun} {be} {w.adjective(pol, 0.15)} and {w.adjective(pol, 0.15)}{w.end(pol)}"


def _two_aspects_and(w: _Writer, pol: str) -> str:
    (a1, be1), (a2, be2) = w.two_aspects()
    return f"The {a1} {be1} {w.adjective(pol, 0)}, and the {a2} {be2} {w.adjective(pol)}."


def _whole_film(w: _Writer, pol: str) -> str:
    noun = w.word(pol, lx.POSITIVE_NOUNS, lx.NEGATIVE_NOUNS)
    return f"It was {w.a(w.adjective(pol, 0.2))} {noun} from start to finish{w.end(pol)}"


def _left_me(w: _Writer, pol: str) -> str:
    feeling = w.word(pol, lx.POSITIVE_FEELINGS, lx.NEGATIVE_FEELINGS)
    if w.chance(0.5):
        return f"The {w.aspect()[0]} left me {feeling}."
    return f"By the end of {w.title()} I felt {feeling}{w.end(pol)}"


def _negated(w: _Writer, pol: str) -> str:
    """A negated opposite ("not bad" is positive, "never convincing" negative)."""
    noun, be = w.aspect()
    negation = w.pick(("not", "never"))
    tail = " at all" if w.chance(0.3) else ""
    return f"The {noun} {be} {negation} {w.adjective(OPPOSITE[pol], 0.15)}{tail}."


def _did_not(w: _Writer, pol: str) -> str:
    verb = w.word(OPPOSITE[pol], lx.POSITIVE_PRESENT_VERBS, lx.NEGATIVE_PRESENT_VERBS)
    if pol == "pos":
        return f"I did not {verb} a single minute of {w.title()}."
    return f"I did not {verb} the {w.aspect()[0]} of {w.title()}."


def _recommend(w: _Writer, pol: str) -> str:
    how = w.pick(("highly", "really", "absolutely")) if pol == "pos" else "never"
    return f"I would {how} recommend it to {w.pick(lx.COMPANIONS)}{w.end(pol)}"


def _directed_with(w: _Writer, pol: str) -> str:
    quality = w.pick(lx.POSITIVE_QUALITIES)
    if pol == "pos":
        return f"{w.name()} directed it with {quality} and {w.pick(lx.POSITIVE_QUALITIES)}."
    return f"{w.name()} directed it with no {quality} at all."


def _reaction(w: _Writer, pol: str) -> str:
    reaction = w.word(pol, lx.POSITIVE_REACTIONS, lx.NEGATIVE_REACTIONS)
    return f"The {w.aspect()[0]} made me {reaction}{w.end(pol)}"


def _hardly(w: _Writer, pol: str) -> str:
    """A "hardly" sentence with no lexicon word (VADER scores it 0)."""
    if pol == "pos":
        return w.pick(("I could hardly wait for the sequel!", "I could hardly look away."))
    return f"I could hardly stay awake during the {w.aspect()[0]}."


POLAR_TEMPLATES: tuple[tuple[Template, float], ...] = (
    (_aspect_was, 5),
    (_title_is, 2),
    (_i_felt_about, 2),
    (_actor_as, 2),
    (_performance, 2),
    (_two_adjectives, 2),
    (_two_aspects_and, 2),
    (_whole_film, 1),
    (_left_me, 1.5),
    (_negated, 2),
    (_did_not, 1),
    (_recommend, 1),
    (_directed_with, 1),
    (_reaction, 1),
    (_hardly, 0.3),
)


# --- mixed sentences: a contrast whose second clause has polarity `pol` ------------------------


def _but(w: _Writer, pol: str) -> str:
    (a1, be1), (a2, be2) = w.two_aspects()
    adj1, adj2 = w.adjective(OPPOSITE[pol], 0.15), w.adjective(pol)
    return f"The {a1} {be1} {adj1}, but the {a2} {be2} {adj2}{w.end(pol)}"


def _although(w: _Writer, pol: str) -> str:
    (a1, be1), (a2, be2) = w.two_aspects()
    adj1, adj2 = w.adjective(OPPOSITE[pol], 0), w.adjective(pol)
    return f"Although the {a1} {be1} {adj1}, the {a2} {be2} {adj2}."


def _yet(w: _Writer, pol: str) -> str:
    (a1, be1), (a2, _) = w.two_aspects()
    adj1, adj2 = w.adjective(OPPOSITE[pol], 0), w.adjective(pol)
    return f"The {a1} {be1} {adj1}, yet the {a2} felt {adj2}."


def _verbs_but(w: _Writer, pol: str) -> str:
    (a1, _), (a2, _) = w.two_aspects()
    verb1 = w.word(OPPOSITE[pol], lx.POSITIVE_VERBS, lx.NEGATIVE_VERBS)
    verb2 = w.word(pol, lx.POSITIVE_VERBS, lx.NEGATIVE_VERBS)
    return f"I {verb1} the {a1}, but I {verb2} the {a2}."


def _actor_but(w: _Writer, pol: str) -> str:
    noun, be = w.aspect()
    actor = f"{w.name()} was {w.adjective(OPPOSITE[pol], 0)} as the {w.pick(lx.ROLES)}"
    return f"{actor}, but the {noun} {be} {w.adjective(pol)}."


MIXED_TEMPLATES: tuple[tuple[Template, float], ...] = (
    (_but, 4),
    (_although, 2),
    (_yet, 2),
    (_verbs_but, 1),
    (_actor_but, 1),
)


# --- neutral sentences (no lexicon words) ----------------------------------------------------


def _genre_from(w: _Writer) -> str:
    return f"{w.title()} is {w.a(w.pick(lx.GENRES))} from {w.pick(lx.DECADES)}."


def _follows(w: _Writer) -> str:
    action = f"{w.pick(lx.PLOT_VERBS)} {w.a(w.pick(lx.OBJECTS))}"
    where = f" in {w.a(w.place())}" if w.chance(0.5) else ""
    return f"The film follows {w.a(w.role())} who {action}{where}."


def _stars_as(w: _Writer) -> str:
    return f"{w.name()} stars as {w.a(w.role())} in {w.title()}."


def _credits(w: _Writer) -> str:
    return f"{w.name()} directed it, and {w.name()} wrote the script."


def _runtime(w: _Writer) -> str:
    return f"It runs about {w.pick(lx.RUNTIMES)}."


def _setting(w: _Writer) -> str:
    return f"The story takes place in {w.a(w.place())} in {w.pick(lx.DECADES)}."


def _watched(w: _Writer) -> str:
    if w.chance(0.5):
        return f"I watched it {w.pick(lx.VENUES)} with {w.pick(lx.COMPANIONS)}."
    return f"I watched it on a {w.pick(lx.DAYS)} {w.pick(lx.TIMES_OF_DAY)}."


def _aspect_style(w: _Writer) -> str:
    noun, be = w.aspect()
    first, second = w.pick(lx.NEUTRAL_ADJECTIVES), w.pick(lx.NEUTRAL_ADJECTIVES)
    style = first if first == second else f"{first} and {second}"
    return f"The {noun} {be} mostly {style}."


def _based_on(w: _Writer) -> str:
    return f"It is based on {w.a(w.pick(lx.SOURCES))} by {w.name()}."


def _ordinal_film(w: _Writer) -> str:
    return f"It is the {w.pick(lx.ORDINALS)} film from {w.name()}."


def _appears(w: _Writer) -> str:
    return f"{w.name()} also appears as the {w.role()}."


def _begins(w: _Writer) -> str:
    return f"The story begins one {w.pick(lx.MONTHS)} in {w.a(w.place())}."


def _music(w: _Writer) -> str:
    first, second = w.pick(lx.INSTRUMENTS), w.pick(lx.INSTRUMENTS)
    instruments = first if first == second else f"{first} and {second}"
    return f"The {w.pick(('score', 'music', 'soundtrack'))} is mostly {instruments}."


def _language(w: _Writer) -> str:
    if w.chance(0.5):
        return f"It is in {w.pick(lx.LANGUAGES)} with subtitles."
    return f"{w.name()} speaks {w.pick(lx.LANGUAGES)} in most scenes."


def _filmed_in(w: _Writer) -> str:
    return f"Most of it was filmed in {w.a(w.place())}."


NEUTRAL_TEMPLATES: tuple[tuple[Callable[[_Writer], str], float], ...] = (
    (_genre_from, 2),
    (_follows, 4),
    (_stars_as, 2),
    (_credits, 1),
    (_runtime, 1),
    (_setting, 2),
    (_watched, 1.5),
    (_aspect_style, 2),
    (_based_on, 1),
    (_ordinal_film, 1),
    (_appears, 1),
    (_filmed_in, 1),
    (_begins, 1),
    (_music, 1),
    (_language, 1),
)


def _choose(w: _Writer, weighted: Sequence[tuple[Callable, float]]) -> Callable:
    return w.rng.choices([t for t, _ in weighted], [p for _, p in weighted])[0]


def sentence(rng: random.Random, polarity: str, mixed: bool = False) -> str:
    """One sentence of `polarity` ("pos", "neg" or "neu"); mixed ones end in that polarity."""
    w = _Writer(rng)
    if polarity == "neu":
        return _choose(w, NEUTRAL_TEMPLATES)(w)
    return _choose(w, MIXED_TEMPLATES if mixed else POLAR_TEMPLATES)(w, polarity)


def _document(rng: random.Random) -> str:
    leaning = rng.choices(LEANINGS, LEANING_WEIGHTS)[0]
    kinds, weights = SENTENCE_KINDS[leaning]
    count = rng.choices(SENTENCES_PER_DOCUMENT, SENTENCE_COUNT_WEIGHTS)[0]
    return " ".join(sentence(rng, *rng.choices(kinds, weights)[0]) for _ in range(count))


def generate_documents(n: int, seed: int) -> list[str]:
    """n review documents, deterministic for (n, seed); the first k of generate_documents(n, s)
    equal generate_documents(k, s)."""
    rng = random.Random(seed)
    return [_document(rng) for _ in range(n)]


def split_sentences(document: str) -> list[str]:
    """The sentences of a generated document (each ends in "." or "!")."""
    return SENTENCE_SPLIT.split(document)


def words(text: str) -> list[str]:
    """Lowercased words with punctuation stripped."""
    return text.lower().translate(str.maketrans("", "", string.punctuation)).split()


def corpus_stats(documents: list[str]) -> dict:
    """Sizes, vocabulary and gold-reward (VADER) moments of a corpus."""
    sentences = [s for d in documents for s in split_sentences(d)]
    vocabulary = {word for d in documents for word in words(d)}
    gold = gold_score(documents)
    return {
        "documents": len(documents),
        "sentences": len(sentences),
        "distinct_sentences": len(set(sentences)),
        "vocabulary": len(vocabulary),
        "gold_mean": statistics.fmean(gold) if gold else 0.0,
        "gold_std": statistics.pstdev(gold) if gold else 0.0,
    }
