"""The most-frequent-tag baseline on examples worked out by hand."""

from __future__ import annotations

import pytest

from rnncore import metrics
from rnncore.baselines import most_frequent_tag

# "can": MD twice, NN once; "fish": NN twice, VB once; "they": PRP; "the": DT.
# Over all words: NN 3, MD 2, DT 2, VB 1, PRP 1 -> NN is the tag for unknown words.
TRAIN_WORDS = [["they", "can", "fish"], ["the", "can"], ["the", "fish", "can", "fish"]]
TRAIN_TAGS = [["PRP", "MD", "VB"], ["DT", "NN"], ["DT", "NN", "MD", "NN"]]


def test_each_word_gets_its_most_frequent_training_tag():
    baseline = most_frequent_tag(TRAIN_WORDS, TRAIN_TAGS)
    assert baseline.by_word == {"they": "PRP", "can": "MD", "fish": "NN", "the": "DT"}
    assert baseline.predict([["the", "fish", "can"], ["they"]]) == [["DT", "NN", "MD"], ["PRP"]]


def test_unknown_words_get_the_most_frequent_tag_overall():
    baseline = most_frequent_tag(TRAIN_WORDS, TRAIN_TAGS)
    assert baseline.unknown == "NN"
    assert baseline.predict([["whales", "can", "swim"]]) == [["NN", "MD", "NN"]]
    assert baseline.predict([["The"]]) == [["NN"]]  # words match exactly: "The" was never seen


def test_ties_go_to_the_tag_more_frequent_overall_then_by_name():
    # "run": VB once, NN once; NN is more frequent overall (2 against 1), so NN wins.
    baseline = most_frequent_tag([["run", "dogs"], ["run", "fast"]], [["VB", "NN"], ["NN", "RB"]])
    assert baseline.by_word["run"] == "NN"
    # "x": A once, B once, and A and B are as frequent overall: the name decides.
    baseline = most_frequent_tag([["x"], ["x"]], [["B"], ["A"]])
    assert baseline.by_word["x"] == "A" and baseline.unknown == "A"


def test_same_answer_whatever_the_order_of_the_training_sentences():
    forward = most_frequent_tag(TRAIN_WORDS, TRAIN_TAGS)
    backward = most_frequent_tag(TRAIN_WORDS[::-1], TRAIN_TAGS[::-1])
    assert forward == backward


def test_baseline_scores_on_a_hand_scored_ner_sentence():
    train = [["John", "lives", "in", "Paris"], ["Paris", "Hilton", "smiled"]]
    tags = [["B-PER", "O", "O", "B-LOC"], ["B-PER", "I-PER", "O"]]
    # "Paris": B-LOC once, B-PER once; B-PER is more frequent overall (2 against 1).
    baseline = most_frequent_tag(train, tags)
    predicted = baseline.predict([["Mary", "left", "Paris"]])  # unknown words -> O
    assert predicted == [["O", "O", "B-PER"]]
    true = [["B-PER", "O", "B-LOC"]]
    scores = metrics.entity_precision_recall_f1(true, predicted)
    assert (scores["precision"], scores["recall"], scores["f1"]) == (0.0, 0.0, 0.0)
    assert metrics.token_accuracy(true, predicted) == pytest.approx(1 / 3)


def test_bad_training_data_is_refused():
    with pytest.raises(ValueError, match="2 sentences but 1 tag sequences"):
        most_frequent_tag([["a"], ["b"]], [["X"]])
    with pytest.raises(ValueError, match="sentence 0 has 2 words but 1 tags"):
        most_frequent_tag([["a", "b"]], [["X"]])
    with pytest.raises(ValueError, match="no tagged words"):
        most_frequent_tag([[]], [[]])
