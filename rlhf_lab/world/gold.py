"""The tiny world's gold reward: VADER's compound sentiment of a text (Hutto & Gilbert 2014), in [-1, 1]."""

from __future__ import annotations

import functools

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


@functools.lru_cache(maxsize=1)
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def gold_score(texts: list[str]) -> list[float]:
    """VADER compound score of each text (one analyzer per process, cached)."""
    analyzer = _analyzer()
    return [analyzer.polarity_scores(text)["compound"] for text in texts]
