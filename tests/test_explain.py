"""Token attributions: the same on both backends, right against the oracle, complete, zero on padding.

Keras traces a model's gradient function on its second call, which costs seconds; the Keras tests
build a fresh (tiny) model per method, which costs a fraction of that, so none pays for a trace.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from support import point_id, spec_for

import rnncore
from rnncore.batch import InputError, step_mask
from rnncore.explain import (
    METHODS,
    ExplainedText,
    explain,
    explain_texts,
    features_spec,
    features_view,
    render_html,
    render_terminal,
)
from rnncore.parity import random_batch
from rnncore.tolerances import Tolerance, tolerance

# Attribution parity between backends (same weights, same inputs): the ("attributions", dtype)
# tolerance. Measured on the grid below: float32 max abs 5e-8 (max rel 5e-5, on near-zero
# occlusion scores), float64 1e-16.
ATTRIBUTIONS = {dtype: tolerance("attributions", dtype) for dtype in ("float32", "float64")}
# grad x input and IG against central finite differences of the float64 oracle (eps 1e-5).
FINITE_DIFFERENCES = Tolerance(atol=1e-8, rtol=1e-6)


def _point(cell, pooling, bi, inputs, dtype, head="relu", layers=1):
    return {"cell": cell, "layers": layers, "bidirectional": bi, "residual": False, "pooling": pooling,
            "head": head, "input": inputs, "dtype": dtype}  # fmt: skip


# cells x bidirectional x every pooling x tokens/features x both dtypes, and a tagging model
PARITY_POINTS = [
    _point("lstm", "last", True, "tokens", "float32"),
    _point("gru", "mean", False, "features", "float32", head="tanh", layers=2),
    _point("rnn-tanh", "max", True, "tokens", "float64", head="gelu"),
    _point("lstm", "attention", False, "features", "float64", head="leaky_relu"),
    _point("gru", "attention", True, "tokens", "float32"),
    _point("rnn-relu", "last", False, "features", "float64"),
    _point("lstm", "none", True, "tokens", "float32"),  # tagging
]


def _close(actual, expected, tol: Tolerance, **kwargs) -> None:
    np.testing.assert_allclose(actual, expected, atol=tol.atol, rtol=tol.rtol, **kwargs)


def _batch(spec, batch=3, max_len=5, seed=2):
    x, lengths = random_batch(spec, batch=batch, max_len=max_len, seed=seed)
    # token rows say their lengths through padding; feature rows need them given
    return (x, None) if spec.input.kind == "tokens" else (x, lengths)


@pytest.mark.parametrize("point", PARITY_POINTS, ids=point_id)
def test_attributions_agree_across_backends(point):
    spec = spec_for(point)
    weights = rnncore.init_weights(spec, seed=1)
    x, lengths = _batch(spec)
    _, lengths_of_rows = rnncore.prepare_batch(spec, x, lengths)
    position = (lengths_of_rows - 1) // 2 if spec.per_step_output else None
    torch_model = rnncore.build(spec, backend="torch", weights=weights)
    for method in METHODS:
        keras_model = rnncore.build(spec, backend="tensorflow", weights=weights)  # fresh: no trace
        torch_result, keras_result = (
            explain(model, x, lengths, method=method, steps=16, position=position)
            for model in (torch_model, keras_model)
        )
        _close(torch_result.scores, keras_result.scores, ATTRIBUTIONS[spec.dtype], err_msg=method)
        np.testing.assert_array_equal(torch_result.target, keras_result.target)
        assert np.abs(torch_result.scores).max() > 1e-3  # not trivially equal


def test_the_features_view_computes_the_token_model(backend):
    spec = spec_for(_point("gru", "max", True, "tokens", "float32"))
    model = rnncore.build(spec, backend=backend, weights=rnncore.init_weights(spec, seed=4))
    ids, _ = random_batch(spec, batch=4, max_len=6, seed=5)
    fmodel, table = features_view(model)
    assert rnncore.spec_of(fmodel) == features_spec(spec) and table is not None
    _, lengths = rnncore.prepare_batch(spec, ids)
    np.testing.assert_array_equal(rnncore.predict(fmodel, table[ids], lengths), rnncore.predict(model, ids))


def test_the_features_view_follows_new_weights():
    spec = spec_for(_point("lstm", "mean", False, "tokens", "float64"))
    model = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec, seed=0))
    first, _ = features_view(model)
    new = rnncore.init_weights(spec, seed=1)
    rnncore.set_weights(model, new)
    again, table = features_view(model)
    assert again is first  # built once per model
    np.testing.assert_array_equal(table, new["embedding.weight"])
    for name, value in rnncore.get_weights(again).items():
        np.testing.assert_array_equal(value, new[name], err_msg=name)


# ---- against the oracle ----------------------------------------------------------------------
ORACLE_POINT = _point("lstm", "attention", True, "tokens", "float64", head="gelu")


def _oracle_directional(spec, weights, ids, target, alphas, eps=1e-5):
    """d/de f(alpha x + e x_t) at e=0 for every row, step t and alpha, by central differences.

    Summed over t it is grad f(alpha x) . x, so this is grad x input per step at alpha = 1, and
    the integrand of integrated gradients at each alpha: one oracle call for all of them.
    """
    fspec = features_spec(spec)
    fweights = {k: v for k, v in weights.items() if k != "embedding.weight"}
    _, lengths = rnncore.prepare_batch(spec, ids)
    x = weights["embedding.weight"][ids] * step_mask(lengths, ids.shape[1])[:, :, None]
    batch, steps = ids.shape
    copies, rows = [], []
    for alpha in alphas:
        for b in range(batch):
            for t in range(steps):
                for sign in (1.0, -1.0):
                    z = alpha * x[b].copy()
                    z[t] += sign * eps * x[b, t]
                    copies.append(z)
                    rows.append(b)
    rows = np.array(rows)
    out = rnncore.reference_forward(fspec, fweights, np.stack(copies), lengths[rows])
    picked = out[np.arange(len(rows)), target[rows]].reshape(len(alphas), batch, steps, 2)
    return (picked[..., 0] - picked[..., 1]) / (2 * eps)


def test_grad_x_input_and_integrated_gradients_match_finite_differences_of_the_oracle():
    spec = spec_for(ORACLE_POINT)
    weights = rnncore.init_weights(spec, seed=3)
    model = rnncore.build(spec, backend="torch", weights=weights)
    ids, _ = random_batch(spec, batch=2, max_len=4, seed=3)
    steps = 8
    gxi = explain(model, ids, method="grad_x_input")
    ig = explain(model, ids, method="integrated_gradients", steps=steps)
    alphas = np.linspace(0.0, 1.0, steps + 1)
    derivs = _oracle_directional(spec, weights, ids, gxi.target, alphas)
    mask = step_mask(gxi.lengths, ids.shape[1])
    trapezoid = np.full(steps + 1, 1.0 / steps)
    trapezoid[[0, -1]] /= 2
    _close(gxi.scores, np.where(mask, derivs[-1], 0.0), FINITE_DIFFERENCES)
    _close(ig.scores, np.where(mask, np.einsum("k,kbt->bt", trapezoid, derivs), 0.0), FINITE_DIFFERENCES)


def test_occlusion_matches_the_oracle():
    spec = spec_for(_point("gru", "max", True, "features", "float64", layers=2))
    weights = rnncore.init_weights(spec, seed=6)
    x, lengths = random_batch(spec, batch=3, max_len=4, seed=6)
    result = explain(rnncore.build(spec, backend="torch", weights=weights), x, lengths, method="occlusion")
    full = rnncore.reference_forward(spec, weights, x, lengths)[np.arange(3), result.target]
    expected = np.zeros((3, 4))
    for b in range(3):
        for t in range(int(lengths[b])):
            occluded = x[b : b + 1].copy()
            occluded[0, t] = 0.0
            out = rnncore.reference_forward(spec, weights, occluded, lengths[b : b + 1])
            expected[b, t] = full[b] - out[0, result.target[b]]
    _close(result.scores, expected, Tolerance(atol=1e-12, rtol=1e-10))
    np.testing.assert_allclose(result.value, full, rtol=1e-12)


# ---- properties ------------------------------------------------------------------------------
def test_integrated_gradients_is_complete_and_the_gap_shrinks_with_steps():
    spec = spec_for(_point("lstm", "mean", True, "tokens", "float64", head="tanh", layers=2))
    model = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec, seed=2))
    ids, _ = random_batch(spec, batch=4, max_len=6, seed=2)
    gaps = []
    for steps in (4, 16, 64):
        result = explain(model, ids, steps=steps)
        np.testing.assert_allclose(
            result.completeness_gap, result.scores.sum(1) - (result.value - result.baseline_value)
        )
        gaps.append(np.abs(result.completeness_gap).max())
    assert gaps[0] > 4 * gaps[1] > 16 * gaps[2]  # the trapezoid rule's 1/steps^2
    delta = np.abs(result.value - result.baseline_value)
    assert gaps[2] < 1e-3 * delta.max()
    np.testing.assert_allclose(result.value, rnncore.predict(model, ids)[np.arange(4), result.target])


def test_padded_steps_get_exactly_zero():
    spec = spec_for(_point("gru", "attention", True, "features", "float32"))
    model = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec, seed=0))
    x, lengths = random_batch(spec, batch=4, max_len=6, seed=1)
    x = x + 5.0  # junk at padded steps too: the model ignores it, and so must the attributions
    padded = ~step_mask(lengths, 6)
    assert padded.any()
    for method in METHODS:
        result = explain(model, x, lengths, method=method, steps=4)
        assert np.all(result.scores[padded] == 0.0), method
        assert np.all(result.scores[~padded] != 0.0), method


DECISIVE_SPEC = {
    "input": {"kind": "tokens", "vocab_size": 10, "embedding_dim": 2, "padding_idx": 0},
    "encoder": {"cell": "rnn", "hidden_size": 1}, "pooling": "mean", "head": {"num_outputs": 2},
    "dtype": "float64",
}  # fmt: skip


def _decisive_token_model(backend: str):
    """Tokens 1..9; only token 7 has a non-zero embedding dimension 0, the only one the RNN reads.

    h_t = tanh(3 e_t[0]) with no recurrence, mean pooling, logit 1 = 2 * mean: every other token
    adds exactly nothing whatever its embedding, so all credit for logit 1 belongs to token 7.
    """
    spec = rnncore.ModelSpec.from_dict(DECISIVE_SPEC)
    w = {k: np.zeros_like(v) for k, v in rnncore.init_weights(spec).items()}
    w["embedding.weight"][1:, 1] = np.linspace(-2.0, 2.0, 9)  # dimension 1: read by nothing
    w["embedding.weight"][7, 0] = 1.0
    w["encoder.layers.0.fwd.W_ih"][0, 0] = 3.0
    w["head.output.weight"][1, 0] = 2.0
    return rnncore.build(spec, backend=backend, weights=w)


def test_the_decisive_token_gets_all_the_credit(backend):
    ids = np.array([[3, 7, 5, 2, 0], [7, 1, 9, 0, 0]])
    decisive = ids == 7
    lengths = np.array([4.0, 3.0])
    expected = {
        # all of f(x) - f(baseline) = 2 tanh(3) / L, up to the trapezoid rule's error
        "integrated_gradients": (2.0 * np.tanh(3.0) / lengths, 1e-4),
        "occlusion": (2.0 * np.tanh(3.0) / lengths, 1e-12),
        # the gradient at the input times the input: 2 / L * 3 tanh'(3) * 1
        "grad_x_input": (6.0 * (1 - np.tanh(3.0) ** 2) / lengths, 1e-12),
    }
    for method, (value, rtol) in expected.items():
        result = explain(_decisive_token_model(backend), ids, method=method, target=1, steps=32)
        np.testing.assert_allclose(result.scores[decisive], value, rtol=rtol, err_msg=method)
        assert np.all(np.abs(result.scores[~decisive]) < 1e-12), method


# ---- targets, positions, errors ---------------------------------------------------------------
def test_the_default_target_is_the_predicted_class_and_a_target_can_be_chosen():
    spec = spec_for(_point("gru", "last", False, "tokens", "float64"))
    model = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec, seed=9))
    ids, _ = random_batch(spec, batch=5, max_len=5, seed=9)
    logits = rnncore.predict(model, ids)
    default = explain(model, ids, method="occlusion")
    np.testing.assert_array_equal(default.target, logits.argmax(1))
    other = explain(model, ids, method="occlusion", target=1 - logits.argmax(1))
    np.testing.assert_allclose(other.value, logits[np.arange(5), 1 - logits.argmax(1)])
    assert default.position is None and default.steps is None


def test_a_tagging_model_explains_one_step_per_row():
    spec = spec_for(_point("lstm", "none", True, "tokens", "float64"))
    model = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec, seed=1))
    ids, _ = random_batch(spec, batch=3, max_len=5, seed=4)  # lengths 5, 1, 5
    logits = rnncore.predict(model, ids)
    per_row = explain(model, ids, position=np.array([2, 0, 3]), method="occlusion")
    np.testing.assert_array_equal(per_row.target, logits[[0, 1, 2], [2, 0, 3]].argmax(1))
    scalar = explain(model, ids, position=0, method="grad_x_input")
    np.testing.assert_allclose(scalar.value, logits[np.arange(3), 0, scalar.target])
    with pytest.raises(InputError, match="position="):
        explain(model, ids)
    with pytest.raises(InputError, match="row 1: position 3 is not a valid step"):
        explain(model, ids, position=3)


def test_bad_arguments_are_refused():
    spec = spec_for(_point("rnn-tanh", "last", False, "features", "float32"))
    model = rnncore.build(spec, backend="torch")
    x, lengths = random_batch(spec, batch=2, max_len=3)
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        explain(model, x, lengths, method="lime")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        explain(model, x, lengths, steps=0)
    with pytest.raises(InputError, match=r"target 2 is not an output index 0\.\.1"):
        explain(model, x, lengths, target=np.array([0, 2]))
    with pytest.raises(InputError, match="only for per-step outputs"):
        explain(model, x, lengths, position=0)


# ---- texts and rendering ---------------------------------------------------------------------
def _text_bundle(tmp_path):
    from rnncore.tokenize import Tokenizer

    texts = ["a gripping patient film", "dull and far too long", "a <b>bold</b> film"] * 3
    tok = Tokenizer.train(texts, kind="word", vocab_size=100, min_frequency=1)
    spec = rnncore.ModelSpec(input=tok.input_spec(embedding_dim=4),
                             encoder={"cell": "gru", "hidden_size": 4, "bidirectional": True},
                             pooling="max", head={"num_outputs": 2})  # fmt: skip
    model = rnncore.build(spec, backend="torch", seed=3)
    return rnncore.save(model, tmp_path / "bundle", labels=["negative", "positive"], tokenizer=tok)


def test_explain_texts_and_render_html(tmp_path):
    folder = _text_bundle(tmp_path)
    rows = explain_texts(folder, ["A gripping film", "far too <b>long"], steps=16)
    assert [r.tokens for r in rows] == [["a", "gripping", "film"], ["far", "too", "<", "b", ">", "long"]]
    for row in rows:
        assert isinstance(row, ExplainedText) and row.label in ("negative", "positive")
        assert row.scores.shape == (len(row.tokens),) and abs(row.completeness_gap) < 1e-2
    page = render_html(rows)
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "&lt;" in page and "<b>" not in page  # tokens are escaped
    assert not any(s in page for s in ("<script", "src=", "href=", "http://", "https://", "<link"))
    assert page.count('class="tok"') == 9 and page.count('class="label"') == 2


def test_explain_texts_refuses_a_model_without_text(tmp_path):
    from rnncore.train.run import RunError

    spec = spec_for(_point("gru", "last", False, "features", "float32"))
    folder = rnncore.save(rnncore.build(spec), tmp_path / "features", labels=["a", "b"])
    with pytest.raises(RunError, match="needs a text-classification run"):
        explain_texts(folder, ["some text"])


def test_render_terminal_shades_by_sign_and_size():
    text = render_terminal(["good", "meh", "bad", "pad"], np.array([2.0, 0.0, -1.0, 0.0, 0.0]))
    assert text.plain == "good meh bad pad"
    styles = {text.plain[s.start : s.end]: s.style for s in text.spans}
    assert set(styles) == {"good", "bad"}  # zero scores stay plain
    good, bad = (str(styles[t]).split(" on ")[1] for t in ("good", "bad"))
    assert good == "rgb(26,152,80)"  # full green at the largest |score|
    red = [int(c) for c in bad.removeprefix("rgb(").rstrip(")").split(",")]
    assert red[0] > red[1] and red[0] > red[2] and min(red) > 39  # a paler red at half the size


def test_importing_explain_loads_no_framework_and_no_rich(tmp_path):
    code = (
        "import sys, rnncore.explain\n"
        "print([m for m in ('torch', 'tensorflow', 'keras', 'rich', 'transformers') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
