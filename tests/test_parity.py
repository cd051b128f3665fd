"""The parity suite: both backends compute the oracle's function, and agree on gradients.

Coverage of the feature grid (cell x layers x direction x residual x pooling x head x
input x dtype, 4,800 points with the head activations):
- the torch backend against the oracle on the full product (cheap: no Keras builds);
- both backends, against the oracle and each other, outputs and gradients, on an all-pairs
  covering of the grid (every pair of values of any two axes occurs at least once) and on
  the full cell x pooling x direction product.
Tolerances come from `rnncore.tolerances`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from support import AXES, pairwise_points, point_id, spec_for

import rnncore
from rnncore.parity import format_report, parity_report, random_batch
from rnncore.tolerances import assert_close

PAIRWISE = pairwise_points()
FULL_PRODUCT = [dict(zip(AXES, values, strict=True)) for values in itertools.product(*AXES.values())]
CELL_POOLING_DIRECTION = [
    {"cell": c, "layers": 2, "bidirectional": bi, "residual": False, "pooling": p,
     "head": "relu" if p != "none" else "none", "input": "tokens", "dtype": "float32"}
    for c in AXES["cell"] for p in AXES["pooling"] for bi in (False, True)
]  # fmt: skip


@pytest.mark.parametrize("point", PAIRWISE + CELL_POOLING_DIRECTION, ids=point_id)
def test_backends_agree_with_the_oracle_and_each_other(point):
    spec = spec_for(point)
    checks = parity_report(spec, ("torch", "tensorflow"), batch=5, max_len=7, seed=3)
    assert {c.what for c in checks} == {"weights", "outputs", "gradients"}
    assert all(c.diff.ok for c in checks), "\n" + format_report(checks)


# rnncore's torch model runs a padded batch either packed or over the whole padded tensor,
# chosen by how full it is (`PADDED_RUN_MIN_FILL`) and, for GRU/RNN training, how long
# (`PADDED_RUN_MIN_STEPS`); these force one way for every batch.
TORCH_PATHS = {"packed": 2.0, "padded": 0.0}


def force_torch_path(monkeypatch, path):
    from rnncore_torch import model as torch_model

    fill = TORCH_PATHS[path]
    monkeypatch.setattr(torch_model, "PADDED_RUN_MIN_FILL", {"inference": fill, "training": fill})
    monkeypatch.setattr(torch_model, "PADDED_RUN_MIN_STEPS", {"lstm": 0, "gru": 0, "rnn": 0})


@pytest.fixture(params=list(TORCH_PATHS))
def torch_path(request, monkeypatch):
    force_torch_path(monkeypatch, request.param)
    return request.param


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_matches_the_oracle_on_the_full_grid(dtype, torch_path):
    failures = []
    points = [p for p in FULL_PRODUCT if p["dtype"] == dtype]
    for point in points:
        spec = spec_for(point)
        weights = rnncore.init_weights(spec, seed=1)
        x, lengths = random_batch(spec, batch=4, max_len=6, seed=2)
        model = rnncore.build(spec, backend="torch", weights=weights)
        expected = rnncore.reference_forward(spec, weights, x, lengths)
        try:
            assert_close(rnncore.predict(model, x, lengths), expected, "outputs", dtype)
        except AssertionError as err:
            failures.append(f"{point_id(point)}: {err}")
    assert len(points) == 2400
    assert not failures, "\n".join(failures[:5])


@pytest.mark.parametrize(
    ("cell", "bidirectional", "steps", "training", "padded"),
    [
        ("gru", True, 32, True, False),  # short GRU/RNN: packed (the padded steps cost more)
        ("rnn", True, 32, True, False),
        ("rnn", False, 32, True, False),
        ("gru", True, 64, True, True),
        ("rnn", False, 128, True, False),  # an RNN's packed backward is cheap up to ~128 steps
        ("rnn", True, 256, True, True),
        ("lstm", True, 32, True, True),  # an LSTM's packed backward is the slow part
        ("lstm", False, 32, True, True),
        ("gru", True, 32, False, False),  # inference: packed below 90% valid steps
        ("gru", False, 128, False, False),
    ],
)
def test_torch_chooses_padded_or_packed_runs_by_cell_length_and_fill(
    cell, bidirectional, steps, training, padded
):
    import torch

    spec = rnncore.ModelSpec.from_dict(
        {"input": {"kind": "features", "feature_dim": 3},
         "encoder": {"cell": cell, "hidden_size": 4, "bidirectional": bidirectional},
         "pooling": "last", "head": {"num_outputs": 2}}
    )  # fmt: skip
    model = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec, seed=0))
    x = torch.zeros(4, steps, 3)
    lengths = torch.tensor([steps, steps // 2, steps // 2, steps // 4])  # 56% of the steps valid
    with torch.set_grad_enabled(training):
        assert model._runs_padded(x, lengths) is padded


def test_padded_runs_are_cut_where_rows_end():
    from rnncore_torch.model import length_spans

    full = [128] * 64
    assert length_spans(full, 128) == [(0, 128, 64)]
    # 4 rows 8 steps short: a cut would save 32 row-steps, less than a kernel call's price
    assert length_spans([128] * 60 + [120] * 4, 128) == [(0, 128, 64)]
    lengths = sorted(np.random.default_rng(0).integers(16, 129, size=64).tolist(), reverse=True)
    spans = length_spans(lengths, 128)
    assert spans[0][0] == 0 and spans[-1][1] == 128
    assert all(before[1] == after[0] for before, after in itertools.pairwise(spans))
    assert all(rows == sum(n > start for n in lengths) for start, _, rows in spans)  # rows still going
    computed = sum(rows * (stop - start) for start, stop, rows in spans)
    assert 3 <= len(spans) <= 6 and sum(lengths) <= computed < 0.75 * 64 * 128


@pytest.mark.parametrize("point", CELL_POOLING_DIRECTION + PAIRWISE[::4], ids=point_id)
def test_torch_padded_and_packed_runs_agree_on_gradients(point, monkeypatch):
    from rnncore_torch.model import length_spans

    spec = spec_for(point)
    weights = rnncore.init_weights(spec, seed=4)
    model = rnncore.build(spec, backend="torch", weights=weights)
    x, lengths = random_batch(spec, batch=5, max_len=7, seed=5)
    assert len(length_spans(sorted(lengths.tolist(), reverse=True), 7)) > 1  # the padded run is cut
    cotangent = np.random.default_rng(0).standard_normal(rnncore.predict(model, x, lengths).shape)
    runs = {}
    for path in TORCH_PATHS:
        force_torch_path(monkeypatch, path)
        runs[path] = rnncore.value_and_grad(model, x, cotangent.astype(spec.dtype), lengths)
    (out_p, grads_p, xgrad_p), (out_d, grads_d, xgrad_d) = runs["packed"], runs["padded"]
    assert_close(out_d, rnncore.reference_forward(spec, weights, x, lengths), "outputs", spec.dtype)
    assert_close(out_d, out_p, "outputs", spec.dtype)
    assert grads_d.keys() == grads_p.keys()
    for name in grads_p:
        try:
            assert_close(grads_d[name], grads_p[name], "gradients", spec.dtype)
        except AssertionError as err:
            raise AssertionError(f"{name}: {err}") from None
    if xgrad_p is not None:
        assert_close(xgrad_d, xgrad_p, "gradients", spec.dtype)


@pytest.mark.parametrize("point", PAIRWISE[::3], ids=point_id)
def test_extra_padding_changes_nothing(point, backend):
    spec = spec_for(point)
    model = rnncore.build(spec, backend=backend, weights=rnncore.init_weights(spec, seed=5))
    x, lengths = random_batch(spec, batch=4, max_len=6, seed=6)
    pad_value = 0 if spec.input.kind == "features" else spec.input.padding_idx
    padded = np.concatenate([x, np.full((4, 5, *x.shape[2:]), pad_value, dtype=x.dtype)], axis=1)
    before = rnncore.predict(model, x, lengths)
    after = rnncore.predict(model, padded, lengths)
    if spec.per_step_output:
        assert np.all(after[:, 6:] == 0), "padded steps must stay zero"
        after = after[:, :6]
    assert_close(after, before, "outputs", spec.dtype)


@pytest.mark.parametrize("point", PAIRWISE[1::4], ids=point_id)
def test_weights_survive_torch_to_keras_to_torch(point):
    spec = spec_for(point)
    torch_model = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec, seed=8))
    keras_model = rnncore.build(spec, backend="keras", weights=rnncore.get_weights(torch_model))
    back = rnncore.build(spec, backend="torch", weights=rnncore.get_weights(keras_model))
    x, lengths = random_batch(spec, batch=3, max_len=5, seed=9)
    original = rnncore.get_weights(torch_model)
    returned = rnncore.get_weights(back)
    for name, value in original.items():
        assert returned[name].dtype == value.dtype and np.array_equal(returned[name], value), name
    np.testing.assert_array_equal(rnncore.predict(back, x, lengths), rnncore.predict(torch_model, x, lengths))


def test_set_weights_replaces_every_weight(backend):
    spec = spec_for(PAIRWISE[3])
    model = rnncore.build(spec, backend=backend, weights=rnncore.init_weights(spec, seed=0))
    new = rnncore.init_weights(spec, seed=1)
    rnncore.set_weights(model, new)
    for name, value in rnncore.get_weights(model).items():
        np.testing.assert_array_equal(value, new[name], err_msg=name)
    x, lengths = random_batch(spec, batch=3, max_len=5, seed=0)
    assert_close(rnncore.predict(model, x, lengths), rnncore.reference_forward(spec, new, x, lengths),
                 "outputs", spec.dtype)  # fmt: skip


def test_get_weights_returns_copies(backend):
    spec = spec_for(PAIRWISE[0])
    model = rnncore.build(spec, backend=backend)
    first = rnncore.get_weights(model)
    for value in first.values():
        value[...] = 7.0
    assert not any(np.all(v == 7.0) for v in rnncore.get_weights(model).values())


def test_building_does_not_modify_the_callers_weights(backend):
    spec = spec_for(PAIRWISE[5])
    weights = rnncore.init_weights(spec, seed=2)
    snapshot = {k: v.copy() for k, v in weights.items()}
    model = rnncore.build(spec, backend=backend, weights=weights)
    rnncore.set_weights(model, weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(value, snapshot[name], err_msg=name)


KERAS_XLA_POINTS = [
    CELL_POOLING_DIRECTION[0],  # lstm, last, unidirectional
    {**CELL_POOLING_DIRECTION[-1], "residual": True},  # rnn, none (per step), bidirectional
    {**PAIRWISE[5], "input": "features", "dtype": "float64"},
]


def _predicted_often(
    monkeypatch, point, calls: int | None = None, xla: str = "1", compile_s_guess: float = 0.0
):
    """A Keras model of `point` asked for one batch of 4 x 7 steps (8 for XLA) `calls` times, or
    until its path for that shape is settled (compiles, trials round the paths, verdict) and
    once more.

    Returns the model's forward runner, the outputs of every call, the oracle's, and the dtype.
    """
    from rnncore_tensorflow import runtime

    monkeypatch.setenv("RNNCORE_KERAS_XLA", xla)
    monkeypatch.setattr(runtime, "XLA_COMPILE_S_GUESS", compile_s_guess)
    monkeypatch.setattr(runtime, "XLA_TRIAL_S", float("inf"))  # all trials, however slow
    monkeypatch.setattr(runtime, "XLA_SHORT_TRIALS", 8)  # short calls, each after a lead: < 100 calls
    spec = spec_for(point)
    weights = rnncore.init_weights(spec, seed=3)
    model = rnncore.build(spec, backend="tensorflow", weights=weights)
    x, lengths = random_batch(spec, batch=4, max_len=7, seed=8)
    expected = rnncore.reference_forward(spec, weights, x, lengths)
    forward = runtime._runner(model).forward_for(x, lengths)
    outputs = [rnncore.predict(model, x, lengths)]
    if calls is not None:
        outputs += [rnncore.predict(model, x, lengths) for _ in range(calls - 1)]
        return forward, outputs, expected, spec.dtype
    while not forward.settled(x) and len(outputs) < 100:
        outputs.append(rnncore.predict(model, x, lengths))
    outputs.append(rnncore.predict(model, x, lengths))  # on the chosen path
    return forward, outputs, expected, spec.dtype


@pytest.mark.parametrize("point", KERAS_XLA_POINTS, ids=point_id)
def test_keras_forward_compiles_shapes_that_recur_and_still_matches_the_oracle(point, monkeypatch):
    from rnncore_tensorflow import runtime
    from rnncore_tensorflow.model import masks_every_layer

    forward, outputs, expected, dtype = _predicted_often(monkeypatch, point)
    for out in outputs:  # eager, graph, every compiled variant, the chosen path
        assert out.shape == expected.shape
        assert_close(out, expected, "outputs", dtype)
    assert forward.chooser.compiled_shapes == {(4, 8)}
    trials = forward.chooser._trials[(4, 8)]
    assert set(trials) == set(forward.chooser.paths)
    # compiled with every layer masked, and as built where that is not the same graph; and the
    # graph traced for the shape
    as_built = [] if masks_every_layer(spec_for(point)) else ["xla"]
    assert forward.chooser.paths == ["graph", "xla_masked", *as_built, "graph_for_shape"]
    assert set(forward._shaped) == {(4, 8)}, "the graph traced for the recurring shape"
    assert all(len(times) == runtime.XLA_SHORT_TRIALS for times in trials.values()), trials
    assert forward.chooser.decided[(4, 8)] in forward.chooser.paths


def test_keras_forward_returns_to_the_graph_where_xla_was_slower(monkeypatch):
    from rnncore_tensorflow import runtime

    monkeypatch.setattr(runtime, "_fastest", lambda trials: runtime.GRAPH)
    forward, outputs, expected, dtype = _predicted_often(monkeypatch, KERAS_XLA_POINTS[1])
    assert forward.chooser.decided == {(4, 8): "graph"}
    # no call on any path was timed after the verdict (the last call ran the graph)
    assert all(len(times) == runtime.XLA_SHORT_TRIALS for times in forward.chooser._trials[(4, 8)].values())
    assert_close(outputs[-1], expected, "outputs", dtype)


def test_keras_forward_stays_on_the_graph_when_xla_cannot_compile(monkeypatch):
    import tensorflow as tf
    from rnncore_tensorflow import runtime

    monkeypatch.setattr(runtime, "XLA_COMPILE_S_GUESS", 0.0)
    point = KERAS_XLA_POINTS[0]
    spec = spec_for(point)
    weights = rnncore.init_weights(spec, seed=3)
    model = rnncore.build(spec, backend="tensorflow", weights=weights)
    x, lengths = random_batch(spec, batch=4, max_len=7, seed=8)
    forward = runtime._runner(model).forward_for(x, lengths)

    def printing(make):
        def maker():
            fn = make()

            def run(*args):
                tf.print("forward")  # PrintV2 has no XLA kernel: the compile fails
                return fn(*args)

            return run

        return maker

    forward._xla_makers = {name: printing(make) for name, make in forward._xla_makers.items()}
    expected = rnncore.reference_forward(spec, weights, x, lengths)
    for _ in range(100):
        assert_close(rnncore.predict(model, x, lengths), expected, "outputs", spec.dtype)
        if forward.settled(x):
            break
    assert forward.chooser.paths == ["graph", "graph_for_shape"], "the failed compile takes XLA out"
    assert forward.settled(x) and forward.chooser.path((4, 8)) in ("graph", "graph_for_shape")
    assert forward.chooser.compiled_shapes == {(4, 8)}, "the compile should have been tried"
    assert_close(rnncore.predict(model, x, lengths), expected, "outputs", spec.dtype)


@pytest.mark.parametrize("point", KERAS_XLA_POINTS[:2], ids=point_id)
def test_keras_batches_without_padding_run_the_mask_free_twin(point, monkeypatch):
    from rnncore_tensorflow import runtime

    monkeypatch.setattr(runtime, "XLA_COMPILE_S_GUESS", 0.0)
    spec = spec_for(point)
    weights = rnncore.init_weights(spec, seed=3)
    model = rnncore.build(spec, backend="tensorflow", weights=weights)
    x, _ = random_batch(spec, batch=4, max_len=7, seed=8)
    full = np.full(4, 7)
    expected = rnncore.reference_forward(spec, weights, x, full)
    runner = runtime._runner(model)
    twin_forward = runner.forward_for(x, full)
    assert twin_forward is not runner.forward
    assert twin_forward.chooser.paths == ["graph", "xla_masked", "xla_unmasked", "graph_for_shape"]
    # eager, graph, both compiled variants, 4 paths' trials (each after a lead call), verdict
    for _ in range(8 * runtime.XLA_SHORT_TRIALS + 10):
        assert_close(rnncore.predict(model, x, full), expected, "outputs", spec.dtype)
        if twin_forward.settled(x):
            break
    assert twin_forward.chooser.decided[(4, 7)] in twin_forward.chooser.paths
    assert twin_forward.chooser.compiled_shapes == {(4, 7)}, "no padding to a step multiple: exact shapes"
    assert runner.forward.chooser._graph_s == {}, "the masked forward should not have run"
    padded = full.copy()
    padded[1] = 3
    assert runner.forward_for(x, padded) is runner.forward
    assert_close(
        rnncore.predict(model, x, padded),
        rnncore.reference_forward(spec, weights, x, padded),
        "outputs",
        spec.dtype,
    )


def test_keras_xla_verdict_takes_the_lowest_lower_quartile_time():
    from rnncore_tensorflow import runtime

    # one slow spell is not a verdict
    assert runtime._fastest({"graph": [2.0, 2.0, 2.0], "xla": [1.0, 1.0, 9.0]}) == "xla"
    # nor is one fast call: the lower quartile of [3, 3, 1] is 2
    assert runtime._fastest({"graph": [2.0] * 3, "xla_masked": [3.0, 3.0, 1.0], "xla": [1.5] * 3}) == "xla"
    # slow calls after the compiles (seen: the first 4 of 8) do not outvote a path's steady
    # state; with 5 of 8 slow, by medians the steady 72 would win here
    slow_start = [74.0, 78.0, 80.0, 76.0, 73.0, 61.0, 61.0, 62.0]
    assert float(np.median(slow_start)) > 72.0
    assert runtime._fastest({"xla": [72.0] * 8, "xla_masked": slow_start}) == "xla_masked"
    assert runtime._fastest({"graph": [1.0] * 3, "xla": [1.0] * 3}) == "graph"  # ties: no compile needed


def test_keras_forward_stays_on_the_graph_when_xla_is_off(monkeypatch):
    forward, *_ = _predicted_often(monkeypatch, KERAS_XLA_POINTS[0], 4, xla="0")
    assert forward.chooser.compiled_shapes == set()


def test_keras_forward_keeps_a_shape_on_the_graph_until_it_has_cost_a_compile(monkeypatch):
    forward, *_ = _predicted_often(monkeypatch, KERAS_XLA_POINTS[0], 4, compile_s_guess=60.0)
    assert forward.chooser.compiled_shapes == set()
    assert 0 < forward.chooser._graph_s[(4, 8)] < 60.0  # two graph calls timed (not eager, not the trace)
