"""Known values from outside: the expected arrays of Keras' own RNN layer tests.

`data/keras_known_values.json` copies, with provenance, the expected outputs of
`test_correctness` and `test_masking` in keras/src/layers/rnn/{lstm,gru,simple_rnn}_test.py:
a single layer with constant weights (kernel 0.01, recurrent 0.02, bias 0.03) on
`np.arange` inputs. The oracle and both backends must reproduce them.

Keras masks may have holes or pad on the left; an rnncore batch is right padded (a row is
valid up to its length), so only the cases with no mask or a right-padding mask apply.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import rnncore
from rnncore import ModelSpec

CASES = json.loads((Path(__file__).parent / "data" / "keras_known_values.json").read_text())["cases"]


def _right_padded(mask) -> bool:
    return mask is None or all(row == sorted(row, reverse=True) for row in mask)


APPLICABLE = [c for c in CASES if _right_padded(c["mask"])]


def _spec(case) -> ModelSpec:
    features = case["input"]["shape"][2]
    return ModelSpec.from_dict(
        {
            "input": {"kind": "features", "feature_dim": features},
            "encoder": {
                "cell": case["cell"],
                "hidden_size": case["units"],
                "bidirectional": case["go_backwards"],
            },
            "pooling": "none" if case["return_sequences"] else "last",
            "head": None,
            "dtype": "float32",
        }
    )


def _constant_weights(spec: ModelSpec, case) -> dict[str, np.ndarray]:
    units = case["units"]
    bias = case["bias"] if case["use_bias"] else 0.0
    weights = {}
    for name, shape in rnncore.canonical_shapes(spec).items():
        value = {"W_ih": case["kernel"], "W_hh": case["recurrent"]}.get(name.rsplit(".", 1)[1], bias)
        weights[name] = np.full(shape, value, dtype=np.float32)
        if case.get("unit_forget_bias") and case["use_bias"] and name.endswith(".b"):
            # Keras' unit_forget_bias *sets* the forget gate's slice (i, f, c, o) to 1.0
            weights[name][units : 2 * units] = 1.0
    return weights


def _run(implementation: str, spec, weights, x, lengths):
    if implementation == "oracle":
        return rnncore.reference_forward(spec, weights, x, lengths)
    model = rnncore.build(spec, backend=implementation, weights=weights)
    return rnncore.predict(model, x, lengths)


def test_sixteen_of_the_keras_cases_apply():
    # 12 unmasked correctness cases and 4 right-padded masking cases; the rest have holes
    assert len(CASES) == 29
    assert len(APPLICABLE) == 16, [c["name"] for c in APPLICABLE]


@pytest.mark.parametrize("implementation", ["oracle", "torch", "tensorflow"])
@pytest.mark.parametrize("case", APPLICABLE, ids=[c["name"] for c in APPLICABLE])
def test_reproduces_keras_expected_values(case, implementation):
    spec = _spec(case)
    weights = _constant_weights(spec, case)
    n = case["input"]["arange"]
    x = np.arange(n, dtype=np.float32).reshape(case["input"]["shape"])
    mask = np.ones(x.shape[:2], bool) if case["mask"] is None else np.array(case["mask"])
    lengths = mask.sum(axis=1)
    out = _run(implementation, spec, weights, x, lengths)
    if case["go_backwards"]:
        out = out[..., case["units"] :]  # the backward half of a bidirectional layer
    expected = np.array(case["expected"], dtype=np.float32)
    tol = {"atol": case["source_atol"], "rtol": case["source_rtol"]}
    if case["return_sequences"]:
        # at padded steps Keras repeats the last output (or 0 with zero_output_for_mask); rnncore gives 0
        np.testing.assert_allclose(out[mask], expected[mask], **tol)
        assert np.all(out[~mask] == 0)
    else:
        np.testing.assert_allclose(out, expected, **tol)
