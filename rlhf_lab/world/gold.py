"""The golds, by name (`Config.gold`): the world's `reader` (the default), `careful`, `vader`; a reward model.

reader   what a careful reader of the world's reviews would give, each flaw costing by degrees: a
         sentence frame reused with other words, praise piled sentence after sentence, a completion
         that ignores or contradicts its prompt, broken grammar, non-words (`rlhf_lab.world.reader`,
         whose docstring has the formula and its reasons). It fixes the two ways RL hacked `careful`,
         the default before it; `careful` and `vader` stay, to compare with results under them.

vader    VADER's compound sentiment of the completion (Hutto & Gilbert 2014), in [-1, 1]. It adds up
         lexicon words and knows nothing of form, so a policy optimized against a proxy of it drifts to
         word salad (" good were joyful were clever were lazy were exhausting were miserable …") that
         it still scores 0.97-0.99: the gold itself is hacked and overoptimization cannot show.

careful  sentiment *of well-formed text*, what a careful reader of the world's reviews would give
         (`rlhf_lab.world.careful`):

             gold = q · vader(completion) + (1 − q) · (−1),      q ∈ [0, 1], the form of prompt + completion

         A well-formed review (q = 1) keeps exactly its VADER sentiment; a broken one goes to the bottom
         of the scale whatever its words. q judges the whole text, prompt + completion, since a
         completion continues a prompt cut mid-sentence (the first 2-6 words of a review). It is the
         product of four factors, each 1 on the world's own documents:

             q = ramp(g; 0.6, 0.9) · ramp(1 − u; 0.8, 1) · ramp(1 − r; 0.35, 0.65) · (1 if finished else 0.5)

         g  grammatical share: the share of the text's word trigrams (sentence by sentence, with
            sentence-start and sentence-end marks; punctuation counts as a word) that the world's
            grammar produces. The grammar is learned once per process from 20,000 documents of
            `generate_documents` at a fixed seed (not the world config's), a word of exactly one
            lexicon list standing for its list ("Hazel Ortega" is FIRST_NAMES LAST_NAMES): 4,400
            trigrams. On 20,000 other documents 31 hold an unseen trigram and none has g < 0.93. A
            sentence longer than the grammar's longest (18 words and marks) is wholly ungrammatical.
         u  non-word share: words outside the grammar's vocabulary (any other character is a word).
         r  repetition: the share of the text's word trigrams that repeat an earlier one. Reviews
            reuse templates ("I would never recommend it to my uncle. I would never recommend it to my
            film class." has r = 0.29; the world's documents reach 0.32), so only r > 0.35 costs; a
            sentence said three times has r = 0.62 (q = 0.12), four times 0.72 (q = 0).
         finished: the text ends its last sentence ("." or "!"); a review cut off mid-sentence (a
            completion that ran to the token limit) is worth half.

         ramp(x; lo, hi) is 0 below lo, 1 above hi and linear between. With these thresholds every one
         of 20,000 generated documents (and so every prompt + continuation split of one, `world.tasks`)
         has q = 1, and careful = vader on them, while the word salad above has q = 0 (gold −1).
         Judging a text takes ~20 µs, under half of VADER's own cost. It knows only the tiny world's
         grammar: for text from elsewhere (a hub dataset) use `vader`. RL hacks it with a sentence frame
         said again and again with other words, and every failure scores the same −1: see `reader`.

a reward model   any other value of `gold`: a reward-model folder (an artifact of the `reward` stage, or
         any HF sequence-classification folder) or an HF hub id ("owner/name") of one, scored by
         `rlhf_lab.scorers.RewardModelScorer` as the objective's reward model is (Gao et al. 2022 label
         with a large reward model as the gold; so does a user with real models). `gold_source` tells
         which a name is.
"""

from __future__ import annotations

import functools

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from rlhf_lab.config.schema import GOLDS, gold_source

# GOLDS and gold_source live with the `gold` field (rlhf_lab.config.schema, a floor below the world, so
# that validating a config needs no world) and are re-exported here with the golds themselves.
__all__ = ["GOLDS", "gold_source", "gold_score", "vader_score"]


@functools.lru_cache(maxsize=1)
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def vader_score(texts: list[str]) -> list[float]:
    """VADER compound score of each text (one analyzer per process, cached)."""
    analyzer = _analyzer()
    return [analyzer.polarity_scores(text)["compound"] for text in texts]


def gold_score(texts: list[str]) -> list[float]:
    """VADER compound score of each text: the `vader` gold, and the corpus statistics' sentiment."""
    return vader_score(texts)
