"""Baselines that a trained model should beat, fitted on the same training data.

The most-frequent-tag baseline is the standard reference point for tagging (Jurafsky and
Martin, *Speech and Language Processing*, ch. 8: about 92% token accuracy on WSJ POS):
each word gets the tag it carried most often in training, and a word never seen in
training gets the tag most frequent overall.

    >>> sentences = [["the", "dog", "runs"], ["the", "runs"]]
    >>> baseline = most_frequent_tag(sentences, [["DET", "NOUN", "VERB"], ["DET", "NOUN"]])
    >>> baseline.predict([["the", "runs", "cat"]])
    [['DET', 'NOUN', 'DET']]
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MostFrequentTag:
    """A fitted most-frequent-tag tagger: `by_word` maps each training word to its tag."""

    by_word: dict[str, str]
    unknown: str  # the tag of words not seen in training

    def predict(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
        """One tag per word of each sentence."""
        return [[self.by_word.get(word, self.unknown) for word in sentence] for sentence in sentences]


def most_frequent_tag(sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[str]]) -> MostFrequentTag:
    """Fit the most-frequent-tag baseline on tagged training sentences.

    Words are matched exactly (case included), as the word tokenizer of a tagging run sees
    them. Ties are broken by the tag's frequency over all training words, then by the tag's
    name, so the result does not depend on the order of the sentences.

    Args:
        sentences: one list of words per sentence.
        tags: one tag per word, same shape.

    Returns:
        A `MostFrequentTag`; `.predict(sentences)` tags new sentences.

    Raises:
        ValueError: no words to learn from, or a sentence and its tags differ in length.
    """
    if len(sentences) != len(tags):
        raise ValueError(f"{len(sentences)} sentences but {len(tags)} tag sequences")
    per_word: defaultdict[str, Counter[str]] = defaultdict(Counter)
    overall: Counter[str] = Counter()
    for i, (words, row) in enumerate(zip(sentences, tags, strict=True)):
        if len(words) != len(row):
            raise ValueError(f"sentence {i} has {len(words)} words but {len(row)} tags")
        for word, tag in zip(words, row, strict=True):
            per_word[word][tag] += 1
            overall[tag] += 1
    if not overall:
        raise ValueError("no tagged words to learn the most frequent tags from")

    def rank(counts: Counter[str]) -> str:
        return min(counts, key=lambda tag: (-counts[tag], -overall[tag], tag))

    return MostFrequentTag({word: rank(counts) for word, counts in per_word.items()}, rank(overall))
