"""rnncore.metrics against scikit-learn and seqeval on real predictions.

Label metrics are checked on logistic-regression predictions for sklearn's digits (10
classes) and breast-cancer (binary) data sets; entity metrics on the IOB2 tags of
the bundled NER sample (`rnncore.data.load_bundled("ner_iob2")`) against predictions made by perturbing
them the way taggers err: dropped, retyped and mis-bounded entities, chunks opened with
I- instead of B-, and random tag noise.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import seqeval.metrics.sequence_labeling as seqeval_labeling
import seqeval.metrics.v1 as seqeval_v1
import seqeval.scheme as seqeval_scheme
import sklearn.metrics as sklearn_metrics

from rnncore import metrics
from rnncore.data import load_bundled

DIGIT_NAMES = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
RTOL = 1e-12


# ---------------------------------------------------------------------------------------------
# Real classifier outputs


@pytest.fixture(scope="module")
def digits():
    """Multiclass: true labels, predicted labels, probabilities and logits on held-out digits."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16, y, test_size=0.5, random_state=0, stratify=y)
    model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return y_test, model.predict(x_test), model.predict_proba(x_test), model.decision_function(x_test)


@pytest.fixture(scope="module")
def cancer():
    """Binary: true labels, predicted labels, probabilities and logits on held-out cases."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, random_state=0, stratify=y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_train, y_train)
    return y_test, model.predict(x_test), model.predict_proba(x_test), model.decision_function(x_test)


def _labelled(case, digits, cancer):
    """(y_true, y_pred, labels) for one named situation."""
    y_true, y_pred = digits[0], digits[1]
    if case == "digits":
        return y_true, y_pred, None
    if case == "class-never-predicted":
        return y_true, np.where(y_pred == 3, 5, y_pred), None
    if case == "class-never-true":
        keep = y_true != 7
        return y_true[keep], y_pred[keep], None
    if case == "strings":
        return DIGIT_NAMES[y_true], DIGIT_NAMES[np.where(y_pred == 3, 5, y_pred)], None
    if case == "labels-subset-reordered":
        return y_true, y_pred, [9, 2, 4, 0]
    if case == "labels-with-unseen":
        return y_true, y_pred, list(range(12))
    if case == "binary":
        return cancer[0], cancer[1], None
    raise AssertionError(case)


CASES = [
    "digits",
    "class-never-predicted",
    "class-never-true",
    "strings",
    "labels-subset-reordered",
    "labels-with-unseen",
    "binary",
]


def test_fixtures_are_realistic(digits, cancer):
    assert 0.9 < metrics.accuracy(digits[0], digits[1]) < 1
    assert 0.9 < metrics.accuracy(cancer[0], cancer[1]) < 1


# ---------------------------------------------------------------------------------------------
# Label metrics


@pytest.mark.parametrize("case", CASES)
def test_accuracy_matches_sklearn(case, digits, cancer):
    y_true, y_pred, _ = _labelled(case, digits, cancer)
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred))


@pytest.mark.parametrize("zero_division", [0.0, 1.0, np.nan])
@pytest.mark.parametrize("average", ["macro", "micro", "weighted", None])
@pytest.mark.parametrize("case", CASES)
def test_precision_recall_f1_matches_sklearn(case, average, zero_division, digits, cancer):
    y_true, y_pred, labels = _labelled(case, digits, cancer)
    ours = metrics.precision_recall_f1(y_true, y_pred, average, labels=labels, zero_division=zero_division)
    p, r, f, support = sklearn_metrics.precision_recall_fscore_support(
        y_true, y_pred, average=average, labels=labels, zero_division=zero_division
    )
    np.testing.assert_allclose([ours["precision"], ours["recall"], ours["f1"]], [p, r, f], rtol=RTOL)
    if average is None:
        expected_labels = labels if labels is not None else np.unique(np.concatenate([y_true, y_pred]))
        np.testing.assert_array_equal(ours["labels"], expected_labels)
        np.testing.assert_array_equal(ours["support"], support)
    else:
        scored = np.unique(y_true) if labels is None else labels
        assert ours["support"] == np.isin(y_true, scored).sum()


@pytest.mark.parametrize("case", CASES)
def test_confusion_matrix_matches_sklearn(case, digits, cancer):
    y_true, y_pred, labels = _labelled(case, digits, cancer)
    ours = metrics.confusion_matrix(y_true, y_pred, labels=labels)
    np.testing.assert_array_equal(ours, sklearn_metrics.confusion_matrix(y_true, y_pred, labels=labels))
    assert ours.dtype == np.int64


@pytest.mark.parametrize("case", ["digits", "class-never-predicted", "strings", "binary"])
def test_classification_report_matches_sklearn_and_is_json(case, digits, cancer):
    y_true, y_pred, _ = _labelled(case, digits, cancer)
    ours = metrics.classification_report(y_true, y_pred)
    theirs = sklearn_metrics.classification_report(y_true, y_pred, output_dict=True, zero_division=0.0)
    assert json.loads(json.dumps(ours)) == ours
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"], rel=RTOL)
    for average in ("macro", "weighted"):
        for name, their_name in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours[f"{average}_{name}"] == pytest.approx(theirs[f"{average} avg"][their_name], rel=RTOL)
    # With every label scored, micro precision = recall = F1 = accuracy.
    assert (
        ours["micro_f1"] == ours["micro_precision"] == ours["micro_recall"] == pytest.approx(ours["accuracy"])
    )
    assert ours["support"] == len(y_true)
    for label, row in ours["per_class"].items():
        assert row["f1"] == pytest.approx(theirs[label]["f1-score"], rel=RTOL)
        assert row["support"] == theirs[label]["support"]


def test_classification_report_with_a_label_subset_keeps_accuracy_over_all_examples(digits):
    y_true, y_pred = digits[0], digits[1]
    report = metrics.classification_report(y_true, y_pred, labels=[1, 8])
    assert report["accuracy"] == metrics.accuracy(y_true, y_pred)
    assert set(report["per_class"]) == {"1", "8"}
    assert report["micro_f1"] == pytest.approx(
        sklearn_metrics.f1_score(y_true, y_pred, labels=[1, 8], average="micro"), rel=RTOL
    )


def test_zero_division_is_documented_behaviour():
    # "b" is predicted but never true: recall and F1 are 0/0 only for a label in neither.
    per_label = metrics.precision_recall_f1(["a", "a"], ["a", "b"], average=None, zero_division=1.0)
    assert per_label["labels"].tolist() == ["a", "b"]
    np.testing.assert_allclose(per_label["precision"], [1.0, 0.0])
    np.testing.assert_allclose(per_label["recall"], [0.5, 1.0])
    np.testing.assert_allclose(per_label["f1"], [2 / 3, 0.0])
    nan = metrics.precision_recall_f1(["a", "a"], ["a", "b"], average="macro", zero_division=np.nan)
    assert nan["recall"] == 0.5  # the undefined recall of "b" is left out of the mean


# ---------------------------------------------------------------------------------------------
# Probabilistic metrics


def test_log_loss_matches_sklearn_multiclass(digits):
    y_true, _, probs, _ = digits
    assert metrics.log_loss(y_true, probs) == pytest.approx(sklearn_metrics.log_loss(y_true, probs), rel=RTOL)


def test_log_loss_matches_sklearn_with_string_labels(digits):
    y_true, _, probs, _ = digits
    names = DIGIT_NAMES[y_true]
    columns = np.argsort(DIGIT_NAMES)  # sklearn orders columns by sorted label
    expected = sklearn_metrics.log_loss(names, probs[:, columns])
    assert metrics.log_loss(names, probs[:, columns]) == pytest.approx(expected, rel=RTOL)
    # Our `labels` gives the label of each column in column order, so no reordering is needed.
    assert metrics.log_loss(names, probs, labels=DIGIT_NAMES) == pytest.approx(expected, rel=RTOL)


def test_log_loss_matches_sklearn_when_a_class_is_absent_from_y_true(digits):
    y_true, _, probs, _ = digits
    keep = y_true != 9
    expected = sklearn_metrics.log_loss(y_true[keep], probs[keep], labels=list(range(10)))
    assert metrics.log_loss(y_true[keep], probs[keep], labels=range(10)) == pytest.approx(expected, rel=RTOL)
    with pytest.raises(ValueError, match=r"9 labels.*10 columns"):
        metrics.log_loss(y_true[keep], probs[keep])


@pytest.mark.parametrize("one_dimensional", [False, True])
def test_log_loss_matches_sklearn_binary(one_dimensional, cancer):
    y_true, _, probs, _ = cancer
    p = probs[:, 1] if one_dimensional else probs
    assert metrics.log_loss(y_true, p) == pytest.approx(sklearn_metrics.log_loss(y_true, p), rel=RTOL)


def test_log_loss_clips_like_sklearn(cancer):
    y_true = cancer[0]
    hard = y_true.astype(np.float64)
    hard[:5] = 1 - hard[:5]  # five confident mistakes: log(0) without clipping
    ours = metrics.log_loss(y_true, hard)
    assert np.isfinite(ours)
    assert ours == pytest.approx(sklearn_metrics.log_loss(y_true, hard), rel=RTOL)
    probs32 = cancer[2].astype(np.float32)
    assert metrics.log_loss(y_true, probs32) == pytest.approx(
        sklearn_metrics.log_loss(y_true, probs32), rel=1e-6
    )


def test_log_loss_from_logits_matches_sklearn(digits, cancer):
    y_true, _, probs, logits = digits
    assert metrics.log_loss_from_logits(y_true, logits) == pytest.approx(
        sklearn_metrics.log_loss(y_true, probs), rel=1e-9
    )
    y_true, _, probs, logits = cancer
    assert logits.ndim == 1
    assert metrics.log_loss_from_logits(y_true, logits) == pytest.approx(
        sklearn_metrics.log_loss(y_true, probs), rel=1e-9
    )


def test_log_loss_from_logits_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 800.0, 0.0]])
    # Row 0 is right with margin 1000 (loss ~0); row 1 is wrong with margin 800 (loss ~800).
    assert metrics.log_loss_from_logits([0, 0], logits) == pytest.approx(400.0)
    assert metrics.log_loss_from_logits([1, 0], np.array([900.0, 900.0])) == pytest.approx(450.0)


def test_log_loss_from_logits_two_columns_matches_sklearn_and_leaves_input_alone(cancer):
    # Two columns take their own (softplus) path; one row is the shape whose transpose
    # is already contiguous, where an in-place shortcut would overwrite the caller's array.
    y_true, _, probs, logits = cancer
    two_columns = np.stack([np.zeros_like(logits), logits], axis=1)
    assert metrics.log_loss_from_logits(y_true, two_columns) == pytest.approx(
        sklearn_metrics.log_loss(y_true, probs), rel=1e-9
    )
    assert metrics.log_loss_from_logits([1, 0], np.array([[0.0, 900.0], [900.0, 0.0]])) == 0.0
    assert metrics.log_loss_from_logits([0], np.array([[0.0, 700.0]])) == pytest.approx(700.0)
    one_row = np.array([[3.0, 1.0, -2.0]])
    metrics.log_loss_from_logits([1], one_row)
    assert one_row.tolist() == [[3.0, 1.0, -2.0]]


@pytest.mark.parametrize("rounding", [None, 2, 1])
def test_roc_auc_matches_sklearn_including_ties(rounding, cancer):
    y_true, _, probs, _ = cancer
    scores = probs[:, 1] if rounding is None else np.round(probs[:, 1], rounding)
    if rounding is not None:
        assert len(np.unique(scores)) < len(scores) / 2  # plenty of ties
    expected = sklearn_metrics.roc_auc_score(y_true, scores)
    assert metrics.roc_auc_binary(y_true, scores) == pytest.approx(expected, rel=RTOL)


def test_roc_auc_positive_label(cancer):
    y_true, _, probs, _ = cancer
    names = np.array(["benign", "malignant"])[1 - y_true]  # sklearn's 0 is malignant
    expected = sklearn_metrics.roc_auc_score(names, probs[:, 0])
    assert metrics.roc_auc_binary(names, probs[:, 0]) == pytest.approx(expected, rel=RTOL)
    flipped = metrics.roc_auc_binary(names, probs[:, 0], pos_label="benign")
    assert flipped == pytest.approx(1 - expected, rel=RTOL)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "call",
    [
        lambda t, p: metrics.accuracy(t, p),
        lambda t, p: metrics.precision_recall_f1(t, p),
        lambda t, p: metrics.confusion_matrix(t, p),
        lambda t, p: metrics.classification_report(t, p),
        lambda t, p: metrics.roc_auc_binary(t, p),
        lambda t, p: metrics.log_loss(t, p),
        lambda t, p: metrics.log_loss_from_logits(t, p),
    ],
)
def test_bad_lengths_and_empty_inputs_raise(call):
    with pytest.raises(ValueError, match=r"y_true has 3 entries but \w+ has 4"):
        call(np.array([0, 1, 1]), np.array([0.1, 0.9, 0.2, 0.4]))
    with pytest.raises(ValueError, match="empty"):
        call(np.array([], dtype=int), np.array([]))


def test_mixed_label_kinds_raise():
    with pytest.raises(ValueError, match="y_true holds numbers but y_pred holds strings"):
        metrics.accuracy([0, 1], ["0", "1"])
    with pytest.raises(ValueError, match="labels holds strings"):
        metrics.confusion_matrix([0, 1], [1, 1], labels=["0", "1"])


def test_bad_options_raise():
    with pytest.raises(ValueError, match="average must be one of"):
        metrics.precision_recall_f1([0, 1], [0, 1], average="binary")
    with pytest.raises(ValueError, match="zero_division"):
        metrics.precision_recall_f1([0, 1], [0, 1], zero_division=0.5)
    with pytest.raises(ValueError, match="distinct"):
        metrics.precision_recall_f1([0, 1], [0, 1], labels=[0, 0])
    with pytest.raises(ValueError, match="exactly two classes"):
        metrics.roc_auc_binary([1, 1, 1], [0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="at least two labels"):
        metrics.log_loss([1, 1], [0.2, 0.9])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.log_loss([0, 1], [0.2, 1.5])
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\)"):
        metrics.log_loss_from_logits([0, 3], np.zeros((2, 3)))


# ---------------------------------------------------------------------------------------------
# Vectorized: the Python work does not grow with the number of examples


def _lines_run_in_metrics(call) -> int:
    """Python lines executed inside rnncore/metrics.py during `call()` (numpy's own code excluded)."""
    lines = 0
    filename = metrics.__file__

    def count(frame, event, arg):
        nonlocal lines
        lines += event == "line"
        return count

    def enter(frame, event, arg):
        return count if frame.f_code.co_filename == filename else None

    previous = sys.gettrace()
    sys.settrace(enter)
    try:
        call()
    finally:
        sys.settrace(previous)
    return lines


@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize(
    "call",
    [
        metrics.accuracy,
        metrics.confusion_matrix,
        metrics.classification_report,
        lambda t, p: metrics.precision_recall_f1(t, p, average=None),
        lambda t, p: metrics.precision_recall_f1(t, p, average="weighted", labels=np.unique(t)[::-1]),
    ],
)
def test_label_metrics_do_not_loop_over_examples(call, text):
    rng = np.random.default_rng(0)

    def lines_for(n: int) -> int:
        y_true, y_pred = np.arange(n) % 10, rng.permutation(np.arange(n) % 10)
        if text:
            y_true, y_pred = DIGIT_NAMES[y_true], DIGIT_NAMES[y_pred]
        return _lines_run_in_metrics(lambda: call(y_true, y_pred))

    assert lines_for(20) == lines_for(20_000)


def test_probabilistic_metrics_do_not_loop_over_examples():
    rng = np.random.default_rng(0)

    def lines_for(n: int) -> int:
        y = np.arange(n) % 3
        logits = rng.normal(size=(n, 3))
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return sum(
            _lines_run_in_metrics(call)
            for call in (
                lambda: metrics.log_loss(y, probs),
                lambda: metrics.log_loss_from_logits(y, logits),
                lambda: metrics.roc_auc_binary(y > 0, logits[:, 0]),
            )
        )

    assert lines_for(30) == lines_for(30_000)


# ---------------------------------------------------------------------------------------------
# Entities: real IOB2 tags, realistic wrong predictions, three schemes


def _read_tags() -> list[list[str]]:
    """The first 200 sentences of the bundled IOB2 NER sample (hironsancorpus, MIT)."""
    return load_bundled("ner_iob2").tags[:200]


def _spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """seqeval's own lenient chunking, end made exclusive."""
    return [(type_, start, end + 1) for type_, start, end in seqeval_labeling.get_entities(tags)]


def _write(length: int, spans, scheme: str) -> list[str]:
    tags = ["O"] * length
    previous = None
    for type_, start, end in spans:
        if scheme == "IOBES" and end - start == 1:
            tags[start] = f"S-{type_}"
            continue
        for i in range(start, end):
            tags[i] = f"I-{type_}"
        if scheme == "IOBES":
            tags[start], tags[end - 1] = f"B-{type_}", f"E-{type_}"
        elif scheme == "IOB2" or previous == (type_, start):
            tags[start] = f"B-{type_}"  # IOB1 writes B- only between touching same-type chunks
        previous = (type_, end)
    return tags


def _mistakes(tags: list[str], types: list[str], rng: np.random.Generator) -> list[tuple[str, int, int]]:
    """The spans a plausible tagger finds: some dropped, retyped or mis-bounded, some invented."""
    found = []
    for type_, start, end in _spans(tags):
        roll = rng.random()
        if roll < 0.04:
            continue
        if roll < 0.08:
            type_ = str(rng.choice([t for t in types if t != type_]))
        elif roll < 0.11 and end < len(tags) and tags[end] == "O":
            end += 1
        elif roll < 0.14 and end - start > 1:
            end -= 1
        elif roll < 0.16 and start > 0 and tags[start - 1] == "O":
            start -= 1
        found.append((type_, start, end))
    outside = [i for i, tag in enumerate(tags) if tag == "O" and (i == 0 or tags[i - 1] == "O")]
    if outside and rng.random() < 0.2:
        start = int(rng.choice(outside))
        found.append((str(rng.choice(types)), start, start + 1))
    return sorted(found, key=lambda span: span[1])


def _noise(tags: list[str], types: list[str], prefixes: str, rng: np.random.Generator) -> list[str]:
    """Random tag errors, including transitions the scheme forbids (I- after O, B- without E-)."""
    noisy = list(tags)
    for i in np.flatnonzero(rng.random(len(tags)) < 0.01):
        prefix = str(rng.choice(list(prefixes)))
        noisy[i] = "O" if prefix == "O" else f"{prefix}-{rng.choice(types)}"
    return noisy


@pytest.fixture(scope="module")
def ner():
    """{scheme: (true sequences, predicted sequences)} over the same 200 real sentences."""
    true_iob2 = _read_tags()
    types = sorted({tag[2:] for tags in true_iob2 for tag in tags if tag != "O"})
    rng = np.random.default_rng(2024)
    data = {}
    for scheme, prefixes in (("IOB2", "BIO"), ("IOB1", "BIO"), ("IOBES", "BIESO")):
        true, pred = [], []
        for tags in true_iob2:
            spans = _mistakes(tags, types, rng)
            true.append(_write(len(tags), _spans(tags), scheme))
            guess = _write(len(tags), spans, scheme)
            if scheme == "IOB2" and spans and rng.random() < 0.3:
                _, start, _ = spans[0]
                guess[start] = "I" + guess[start][1:]  # an entity opened with I-, as taggers do
            pred.append(_noise(guess, types, prefixes, rng))
        data[scheme] = (true, pred)
    return data


def test_fixture_sentences_are_real_and_predictions_imperfect(ner):
    true, pred = ner["IOB2"]
    assert len(true) == 200 and sum(map(len, true)) == 5831
    entities = sum(len(_spans(tags)) for tags in true)
    assert entities > 500
    f1 = metrics.entity_precision_recall_f1(true, pred)["f1"]
    assert 0.7 < f1 < 0.95
    # The predictions exercise the lenient rule: I- chunks with no B- before them.
    assert any(t.startswith("I-") and (i == 0 or p[i - 1] == "O") for p in pred for i, t in enumerate(p))


@pytest.mark.parametrize("scheme", ["IOB2", "IOB1", "IOBES"])
def test_extract_entities_matches_seqeval_default_mode(scheme, ner):
    for sequence in (seq for side in ner[scheme] for seq in side):
        assert metrics.extract_entities(sequence, scheme) == _spans(sequence)


def test_extract_entities_matches_seqeval_strict_iobes(ner):
    for sequence in (seq for side in ner["IOBES"] for seq in side):
        theirs = seqeval_scheme.Tokens(sequence, seqeval_scheme.IOBES).entities
        ours = metrics.extract_entities(sequence, "IOBES", mode="strict")
        assert ours == [(e.tag, e.start, e.end) for e in theirs]


def test_iob1_rules_match_seqeval_strict_iob1_on_valid_iob1(ner):
    true, _ = ner["IOB1"]
    touching = ["I-DAT", "I-DAT", "B-DAT", "I-LOC", "B-LOC", "O", "I-ORG"]
    for sequence in [*true, touching]:
        theirs = seqeval_scheme.Tokens(sequence, seqeval_scheme.IOB1).entities
        assert metrics.extract_entities(sequence, "IOB1") == [(e.tag, e.start, e.end) for e in theirs]
    assert metrics.extract_entities(touching, "IOB1") == [("DAT", 0, 2), ("DAT", 2, 3), ("LOC", 3, 4),
                                                          ("LOC", 4, 5), ("ORG", 6, 7)]  # fmt: skip


def test_strict_iobes_drops_unterminated_and_stray_chunks():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "E-LOC", "S-ORG", "B-DAT", "E-TIM", "B-MON", "I-MON", "E-MON"]
    assert metrics.extract_entities(tags, "IOBES", mode="strict") == [("ORG", 5, 6), ("MON", 8, 11)]


def test_default_iobes_repairs_chunks_as_conlleval_does():
    # conlleval: I- after O opens a chunk, E- and S- close one, a change of type closes one.
    tags = ["B-PER", "I-PER", "O", "I-LOC", "E-LOC", "S-ORG", "B-DAT", "E-TIM", "B-MON", "I-MON", "E-MON"]
    assert metrics.extract_entities(tags, "IOBES") == [
        ("PER", 0, 2), ("LOC", 3, 5), ("ORG", 5, 6), ("DAT", 6, 7), ("TIM", 7, 8), ("MON", 8, 11)
    ]  # fmt: skip
    assert metrics.extract_entities(["I-PER", "E-PER"], "IOBES") == [("PER", 0, 2)]


@pytest.mark.parametrize("average", ["micro", "macro", "weighted", None])
@pytest.mark.parametrize(("scheme", "mode"), [("IOB2", "default"), ("IOB1", "default"), ("IOBES", "default"),
                                             ("IOB2", "strict"), ("IOBES", "strict")])  # fmt: skip
def test_entity_scores_match_seqeval(scheme, mode, average, ner):
    true, pred = ner[scheme]
    ours = metrics.entity_precision_recall_f1(true, pred, scheme=scheme, average=average, mode=mode)
    if mode == "strict":
        p, r, f, support = seqeval_v1.precision_recall_fscore_support(
            true, pred, average=average, zero_division=0, scheme=getattr(seqeval_scheme, scheme)
        )
    else:
        p, r, f, support = seqeval_labeling.precision_recall_fscore_support(
            true, pred, average=average, zero_division=0
        )
    np.testing.assert_allclose([ours["precision"], ours["recall"], ours["f1"]], [p, r, f], rtol=RTOL)
    np.testing.assert_array_equal(ours["support"], support)
    if average is None:
        assert ours["labels"].tolist() == ["ART", "DAT", "LOC", "MON", "ORG", "PER", "PSN", "TIM"]


def test_entity_f1_matches_seqeval_public_api(ner):
    from seqeval.metrics import f1_score

    true, pred = ner["IOB2"]
    assert metrics.entity_precision_recall_f1(true, pred)["f1"] == pytest.approx(
        f1_score(true, pred), rel=RTOL
    )
    true, pred = ner["IOBES"]
    expected = f1_score(true, pred, mode="strict", scheme=seqeval_scheme.IOBES)
    ours = metrics.entity_precision_recall_f1(true, pred, scheme="IOBES", mode="strict")
    assert ours["f1"] == pytest.approx(expected, rel=RTOL)


def test_entity_scores_without_any_entity_are_zero_division():
    sequences = [["O", "O"], ["O"]]
    assert metrics.entity_precision_recall_f1(sequences, sequences)["f1"] == 0.0
    ones = metrics.entity_precision_recall_f1(sequences, sequences, average="macro", zero_division=1.0)
    assert ones == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 0}


def test_entity_input_errors():
    with pytest.raises(ValueError, match="true_sequences has 2 sequences but pred_sequences has 1"):
        metrics.entity_precision_recall_f1([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sequence 1 has 2 true tags but 3 predicted tags"):
        metrics.entity_precision_recall_f1([["O"], ["O", "O"]], [["O"], ["O", "O", "O"]])
    with pytest.raises(ValueError, match="no sequences"):
        metrics.entity_precision_recall_f1([], [])
    with pytest.raises(ValueError, match="'E-PER' is not valid in IOB2"):
        metrics.extract_entities(["B-PER", "E-PER"], "IOB2")
    with pytest.raises(ValueError, match="scheme must be one of"):
        metrics.extract_entities(["O"], "IOX")
    with pytest.raises(ValueError, match="mode must be one of default, strict"):
        metrics.entity_precision_recall_f1([["O"]], [["O"]], mode="lenient")


# ---------------------------------------------------------------------------------------------
# Tokens


def test_token_accuracy_matches_seqeval(ner):
    from seqeval.metrics import accuracy_score

    true, pred = ner["IOB2"]
    assert metrics.token_accuracy(true, pred) == pytest.approx(accuracy_score(true, pred), rel=RTOL)


def test_token_accuracy_ignores_padding(ner):
    true, pred = ner["IOB2"]
    width = max(map(len, true))
    padded_true = np.array([tags + ["<pad>"] * (width - len(tags)) for tags in true])
    padded_pred = np.array([tags + ["O"] * (width - len(tags)) for tags in pred])
    expected = metrics.token_accuracy(true, pred)
    assert metrics.token_accuracy(padded_true, padded_pred, ignore="<pad>") == pytest.approx(expected)
    assert metrics.token_accuracy(padded_true, padded_pred) < expected  # padding "O" vs "<pad>" counts wrong
    ids = np.array([[1, 2, -100], [3, -100, -100]])
    assert metrics.token_accuracy(ids, np.array([[1, 0, 5], [3, 3, 3]]), ignore=[-100]) == pytest.approx(
        2 / 3
    )
    with pytest.raises(ValueError, match="every position is ignored"):
        metrics.token_accuracy([[-100]], [[1]], ignore=-100)
    with pytest.raises(ValueError, match="ignore holds numbers but the tags holds strings"):
        metrics.token_accuracy(true, pred, ignore=-100)


def test_masked_token_arrays_keep_valid_steps_in_row_order(ner):
    true, pred = ner["IOB2"]
    true, pred = true[:16], pred[:16]
    names = sorted({tag for tags in true + pred for tag in tags})
    ids = {tag: i for i, tag in enumerate(names)}
    width = max(map(len, true))
    labels = np.full((len(true), width), -1)
    preds = np.full((len(true), width), -1)
    for row, (t, p) in enumerate(zip(true, pred, strict=True)):
        labels[row, : len(t)] = [ids[tag] for tag in t]
        preds[row, : len(p)] = [ids[tag] for tag in p]
    lengths = np.array([len(t) for t in true])

    flat_labels, flat_preds = metrics.masked_token_arrays(labels, preds, lengths)

    assert flat_labels.tolist() == [ids[tag] for tags in true for tag in tags]
    assert flat_preds.tolist() == [ids[tag] for tags in pred for tag in tags]
    assert metrics.accuracy(flat_labels, flat_preds) == pytest.approx(metrics.token_accuracy(true, pred))


def test_masked_token_arrays_pass_logits_to_the_loss():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(3, 7))
    logits = rng.normal(size=(3, 7, 5))
    lengths = np.array([7, 2, 0])
    flat_labels, flat_logits = metrics.masked_token_arrays(labels, logits, lengths)
    assert flat_labels.shape == (9,) and flat_logits.shape == (9, 5)
    assert metrics.log_loss_from_logits(flat_labels, flat_logits) == pytest.approx(
        metrics.log_loss_from_logits(np.r_[labels[0], labels[1, :2]], np.r_[logits[0], logits[1, :2]])
    )
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 7\]"):
        metrics.masked_token_arrays(labels, logits, np.array([8, 1, 1]))
    with pytest.raises(ValueError, match="first two axes must match"):
        metrics.masked_token_arrays(labels, logits[:, :6], lengths)
