"""Training parity: the same run on torch and on Keras ends at the same weights.

Same spec, same initial weights, same batches and learning rates, dropout 0: after 50 steps
every canonical weight agrees within the "training" tolerance of `rnncore.tolerances`
(1e-4 relative in float32, 1e-9 in float64).
"""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

import rnncore
from rnncore.parity import random_batch
from rnncore.tolerances import assert_close
from rnncore.train import TrainConfig
from rnncore.train.losses import reference_loss

STEPS = 50


def _spec(dtype: str, cell: str = "lstm", task: str = "classification", pooling: str = "mean"):
    return rnncore.ModelSpec.from_dict(
        {
            "input": {"kind": "tokens", "vocab_size": 40, "embedding_dim": 6, "padding_idx": 0},
            "encoder": {"cell": cell, "hidden_size": 5, "num_layers": 2, "bidirectional": True},
            "pooling": "none" if task == "tagging" else pooling,
            "head": {"hidden": [4], "activation": "tanh", "num_outputs": 3, "task": task},
            "dtype": dtype,
        }
    )


def _batches(spec, n: int, seed: int = 0, full_every: int = 0):
    """Batches whose labels depend on the tokens, so that there is something to learn.

    With `full_every`, every that many-th batch has no padding (every row at full length).
    """
    for i in range(n):
        if full_every and i % full_every == 0:
            rng = np.random.default_rng(seed * 1000 + i)
            x = rng.integers(1, spec.input.vocab_size, size=(6, 9))  # never the padding id 0
            lengths = np.full(6, 9)
        else:
            x, lengths = random_batch(spec, batch=6, max_len=9, seed=seed * 1000 + i)
        y = x % 3 if spec.head.task == "tagging" else x[:, 0] % 3
        yield x, lengths, y


def _train(spec, backend: str, config: TrainConfig, weights, full_every: int = 0):
    model = rnncore.build(spec, backend=backend, weights=weights)
    trainer = rnncore.get_backend(backend).make_trainer(model, config)
    batches = _batches(spec, STEPS, full_every=full_every)
    losses = [trainer.step(x, lengths, y, config.learning_rate(step, STEPS))
              for step, (x, lengths, y) in enumerate(batches)]  # fmt: skip
    return model, trainer, losses


CONFIGS = {
    "adam": TrainConfig(optimizer="adam", lr=0.01),
    "sgd-momentum": TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9),
    "sgd-nesterov-wd-clip": TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
                                        weight_decay=1e-3, clip_norm=0.5),
    "adamw-cosine-warmup": TrainConfig(optimizer="adamw", lr=0.02, weight_decay=0.01,
                                       schedule="cosine", warmup_steps=5),
}  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fifty_steps_end_at_the_same_weights(name, dtype):
    spec = _spec(dtype, cell="gru" if "sgd" in name else "lstm")
    config = CONFIGS[name]
    start = rnncore.init_weights(spec, seed=4)
    torch_model, torch_trainer, torch_losses = _train(spec, "torch", config, start)
    keras_model, keras_trainer, keras_losses = _train(spec, "tensorflow", config, start)
    assert np.mean(torch_losses[-10:]) < np.mean(torch_losses[:10]), "training should lower the loss"
    np.testing.assert_allclose(keras_losses, torch_losses, rtol=1e-4 if dtype == "float32" else 1e-9)
    a, b = rnncore.get_weights(torch_model), rnncore.get_weights(keras_model)
    moved = max(float(np.abs(a[k] - start[k]).max()) for k in a)
    assert moved > 1e-3, "the weights must actually move"
    for key in a:
        assert_close(b[key], a[key], "training", dtype)
    state_t, state_k = torch_trainer.optimizer_state(), keras_trainer.optimizer_state()
    assert state_t.keys() == state_k.keys()
    assert int(state_t["step"]) == int(state_k["step"]) == STEPS


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unpadded_batches_take_the_unmasked_paths_and_still_agree(dtype, monkeypatch):
    # Batches with no padding run torch's plain (unpacked) layers and Keras' full-length twin
    # (no step masks); the padded ones in between run the masked paths, on the same weights.
    from rnncore_tensorflow import model as keras_model_module

    twins = []
    build_twin = keras_model_module.full_length_twin
    monkeypatch.setattr(
        "rnncore_tensorflow.train.full_length_twin", lambda model: twins.append(1) or build_twin(model)
    )
    spec = _spec(dtype, cell="gru", pooling="last")
    config = CONFIGS["adam"]
    start = rnncore.init_weights(spec, seed=4)
    torch_model, _, torch_losses = _train(spec, "torch", config, start, full_every=2)
    keras_model, _, keras_losses = _train(spec, "tensorflow", config, start, full_every=2)
    assert twins == [1], "the Keras trainer should have built its full-length twin once"
    np.testing.assert_allclose(keras_losses, torch_losses, rtol=1e-4 if dtype == "float32" else 1e-9)
    a, b = rnncore.get_weights(torch_model), rnncore.get_weights(keras_model)
    assert max(float(np.abs(a[k] - start[k]).max()) for k in a) > 1e-3, "the weights must actually move"
    for key in a:
        assert_close(b[key], a[key], "training", dtype)


def test_tagging_loss_ignores_padding_and_matches_numpy(backend):
    spec = _spec("float64", task="tagging")
    weights = rnncore.init_weights(spec, seed=1)
    x, lengths, y = next(_batches(spec, 1))
    y[0, 0] = -100  # an ignored label
    logits = rnncore.reference_forward(spec, weights, x, lengths)
    expected = reference_loss(spec, logits, y, lengths)
    model = rnncore.build(spec, backend=backend, weights=weights)
    trainer = rnncore.get_backend(backend).make_trainer(model, TrainConfig(optimizer="sgd", lr=1e-9))
    assert trainer.step(x, lengths, y, 1e-9) == pytest.approx(expected, rel=1e-10)


def test_torch_trainer_flushes_denormals_as_tensorflow_does():
    # unflushed, RNN training slows down many times once gradients reach the denormal range
    import torch

    torch.set_flush_denormal(False)  # (an earlier trainer in this process may have set it)
    denormal = torch.tensor([1e-39], dtype=torch.float32)  # made unflushed: flushing would zero it
    assert float(denormal * 1.0) != 0.0  # the CPU keeps it unless told otherwise
    spec = _spec("float32")
    model = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec, seed=0))
    rnncore.get_backend("torch").make_trainer(model, CONFIGS["adam"])
    assert float(denormal * 1.0) == 0.0


def test_optimizer_state_moves_between_backends():
    spec = _spec("float64")
    config = CONFIGS["adam"]
    start = rnncore.init_weights(spec, seed=2)
    torch_model, torch_trainer, _ = _train(spec, "torch", config, start)
    keras_model = rnncore.build(spec, backend="tensorflow", weights=rnncore.get_weights(torch_model))
    keras_trainer = rnncore.get_backend("tensorflow").make_trainer(keras_model, config)
    keras_trainer.load_optimizer_state(torch_trainer.optimizer_state())
    x, lengths, y = next(_batches(spec, 1, seed=7))
    torch_trainer.step(x, lengths, y, 0.01)
    keras_trainer.step(x, lengths, y, 0.01)
    a, b = rnncore.get_weights(torch_model), rnncore.get_weights(keras_model)
    for key in a:
        assert_close(b[key], a[key], "training", "float64")


def _keras_weights_after_training(spec, config, start):
    model, trainer, _ = _train(spec, "tensorflow", config, start)
    return rnncore.get_weights(model), trainer


@pytest.mark.parametrize("name", ["adam", "sgd-nesterov-wd-clip"])
def test_keras_update_op_by_op_equals_the_xla_compiled_one(name, monkeypatch):
    # The Keras trainer compiles its update (clipping + optimizer) with XLA; RNNCORE_KERAS_XLA=0
    # runs it op by op. Same formulas, so both land on torch's weights.
    spec = _spec("float32", cell="gru")
    config, start = CONFIGS[name], rnncore.init_weights(spec, seed=4)
    torch_model, _, _ = _train(spec, "torch", config, start)
    compiled, compiled_trainer = _keras_weights_after_training(spec, config, start)
    monkeypatch.setenv("RNNCORE_KERAS_XLA", "0")
    plain, plain_trainer = _keras_weights_after_training(spec, config, start)
    assert compiled_trainer.use_xla and not plain_trainer.use_xla
    expected = rnncore.get_weights(torch_model)
    for key in expected:
        assert_close(compiled[key], expected[key], "training", "float32")
        assert_close(plain[key], expected[key], "training", "float32")


def test_keras_update_falls_back_when_xla_cannot_compile_it(monkeypatch):
    import tensorflow as tf
    from rnncore_tensorflow.train import Trainer

    @tf.function(jit_compile=True)
    def uncompilable(self, grads, lr):
        tf.print(lr)  # PrintV2 has no XLA kernel: the compile fails when the step runs
        self._update(grads, lr)

    monkeypatch.setattr(Trainer, "_xla_update", uncompilable)
    spec = _spec("float64", cell="gru")
    config, start = CONFIGS["adam"], rnncore.init_weights(spec, seed=4)
    torch_model, _, _ = _train(spec, "torch", config, start)
    weights, trainer = _keras_weights_after_training(spec, config, start)
    assert not trainer.use_xla, "the trainer should have gone on op by op"
    assert int(trainer.optimizer_state()["step"]) == STEPS, "the failed first step must count once"
    expected = rnncore.get_weights(torch_model)
    for key in expected:
        assert_close(weights[key], expected[key], "training", "float64")


def test_keras_errors_after_a_working_xla_update_are_raised(monkeypatch):
    import tensorflow as tf

    spec = _spec("float32")
    model = rnncore.build(spec, backend="tensorflow", weights=rnncore.init_weights(spec, seed=4))
    trainer = rnncore.get_backend("tensorflow").make_trainer(model, CONFIGS["adam"])
    x, lengths, y = next(_batches(spec, 1))
    trainer.step(x, lengths, y, 0.01)

    def failing(full_length):
        def run(args):
            raise tf.errors.InvalidArgumentError(None, None, "a batch the graph rejects")

        return run

    monkeypatch.setattr(trainer, "_step_paths", failing)
    with pytest.raises(tf.errors.InvalidArgumentError):
        trainer.step(x, lengths, y, 0.01)
    assert trainer.use_xla, "a bad batch is not a reason to drop XLA"


@pytest.mark.parametrize(
    "task, bad, message",
    [
        ("classification", lambda y: y * 0 + 3, "label 3 is not one of the head's 3 classes"),
        ("classification", lambda y: y * 0 - 1, "label -1 is not one of the head's 3 classes"),
        ("classification", lambda y: y[:-1], "targets have shape (5,); this model's loss needs (6,)"),
        ("classification", lambda y: y.astype(float), "class labels must be integers"),
        ("tagging", lambda y: np.where(y == 0, 5, y), "label 5 is not one of the head's 3 classes"),
    ],
)
def test_bad_labels_are_refused_before_any_weight_moves(backend, task, bad, message):
    # XLA-compiled steps would gather out-of-range labels and train on NaN; both backends check
    # every batch in numpy first, with one message.
    from rnncore.batch import InputError

    spec = _spec("float32", task=task)
    start = rnncore.init_weights(spec, seed=4)
    model = rnncore.build(spec, backend=backend, weights=start)
    trainer = rnncore.get_backend(backend).make_trainer(model, CONFIGS["adam"])
    x, lengths, y = next(_batches(spec, 1))
    with pytest.raises(InputError, match=re.escape(message)):
        trainer.step(x, lengths, bad(y), 0.01)
    after = rnncore.get_weights(model)
    assert all(np.array_equal(after[k], start[k]) for k in start)
    assert int(trainer.optimizer_state()["step"]) == 0


def test_tagging_labels_past_a_row_length_or_ignored_are_not_checked(backend):
    spec = _spec("float64", task="tagging")
    model = rnncore.build(spec, backend=backend, weights=rnncore.init_weights(spec, seed=4))
    trainer = rnncore.get_backend(backend).make_trainer(model, CONFIGS["adam"])
    x, lengths, y = next(_batches(spec, 1))
    y = y.copy()
    y[1, 1:] = 99  # row 1 has length 1: its steps 1.. do not count
    y[0, 0] = -100
    assert np.isfinite(trainer.step(x, lengths, y, 0.01))


def test_keras_whole_step_xla_trains_to_torch_weights(monkeypatch):
    # Shapes that recur are compiled whole (forward, backward, update) and traced for their
    # exact shape, the two timed against each other; whichever path wins, 50 steps end at
    # torch's weights.
    from rnncore_tensorflow import runtime

    monkeypatch.setattr(runtime, "XLA_COMPILE_S_GUESS", 0.0)  # compile on the first traced step
    # every path's trials within 25 steps per shape (a tiny model's steps are short calls: each
    # trial comes after a lead call)
    monkeypatch.setattr(runtime, "XLA_SHORT_TRIALS", 4)
    spec = _spec("float32", cell="gru", pooling="last")
    config, start = CONFIGS["adam"], rnncore.init_weights(spec, seed=4)
    torch_model, _, torch_losses = _train(spec, "torch", config, start, full_every=2)
    keras_model, trainer, keras_losses = _train(spec, "tensorflow", config, start, full_every=2)
    for full_length in (False, True):  # padded batches and unpadded ones (the twin's step)
        chooser = trainer._paths[full_length].chooser
        assert chooser.paths == ["graph", "xla", "graph_for_shape"]
        assert chooser.compiled_shapes == {(6, 9)}
        assert chooser.decided[(6, 9)] in ("xla", "graph_for_shape")
        assert set(chooser._trials[(6, 9)]) == {"xla", "graph_for_shape"}
        assert all(len(t) == runtime.XLA_SHORT_TRIALS for t in chooser._trials[(6, 9)].values())
    np.testing.assert_allclose(keras_losses, torch_losses, rtol=1e-4)
    a, b = rnncore.get_weights(torch_model), rnncore.get_weights(keras_model)
    for key in a:
        assert_close(b[key], a[key], "training", "float32")
    assert int(trainer.optimizer_state()["step"]) == STEPS


def test_keras_whole_step_xla_is_left_out_where_it_would_need_too_much_memory(monkeypatch):
    # XLA's whole step holds about one copy of the recurrent weights per time step (a 2-layer
    # BiGRU of hidden 512 over 512 steps was killed for memory at 24 GB): shapes estimated over
    # the limit race only the graphs, and train as they do.
    from rnncore_tensorflow import runtime, train

    spec = _spec("float32", cell="gru")
    # 2 directions x (layer 0: 15x6 + 15x5, layer 1: 15x10 + 15x5) = 780 float32 weights a step
    assert train.xla_step_bytes(spec, 9) == pytest.approx(train.XLA_STEP_BYTES_PER_WEIGHT_STEP * 9 * 780 * 4)
    monkeypatch.setattr(runtime, "XLA_COMPILE_S_GUESS", 0.0)
    monkeypatch.setattr(train, "XLA_STEP_MAX_BYTES", train.xla_step_bytes(spec, 8))  # length 9 is over
    config, start = CONFIGS["adam"], rnncore.init_weights(spec, seed=4)
    torch_model, _, _ = _train(spec, "torch", config, start)
    weights, trainer = _keras_weights_after_training(spec, config, start)
    paths = trainer._paths[False]
    assert paths.chooser.paths == ["graph", "xla", "graph_for_shape"], "XLA stays on for shapes that fit"
    assert set(paths.chooser._trials[(6, 9)]) == {"graph_for_shape"}, "it stands in for the graph"
    assert paths.chooser.decided[(6, 9)] == "graph_for_shape"
    assert not paths.chooser.compiled((6, 9), "xla") and paths._xla is None, "the step must never compile"
    expected = rnncore.get_weights(torch_model)
    for key in expected:
        assert_close(weights[key], expected[key], "training", "float32")


def test_path_chooser_races_only_the_variants_that_fit_a_shape(monkeypatch):
    from rnncore_tensorflow import runtime

    monkeypatch.setattr(runtime, "XLA_COMPILE_S_GUESS", 0.0)
    chooser = runtime.PathChooser(["a", "b"], fits=lambda shape, variant: shape[1] <= 8 and variant == "b")
    assert chooser.path((4, 16)) == "graph" and chooser.decided == {(4, 16): "graph"}, "nothing fits"
    assert chooser.settled((4, 16)) and chooser.compiled_shapes == set()
    assert chooser.path((4, 8)) == "b"
    chooser.ran((4, 8), "b", 1.0)  # its compile
    for _ in range(2 * runtime.XLA_TRIALS):  # round robin over the graph and "b" alone
        path = chooser.path((4, 8))
        assert path in ("graph", "b")
        chooser.ran((4, 8), path, 0.1 if path == "b" else 0.2)
    assert set(chooser._trials[(4, 8)]) == {"graph", "b"} and chooser.decided[(4, 8)] == "b"
    assert chooser.race((4, 8)) == {"path": "b", "trials_q25_ms": {"graph": 200.0, "b": 100.0}}
    assert chooser.race((4, 16)) == {"path": "graph", "trials_q25_ms": {}}, "no race: nothing fits"


def test_path_chooser_races_a_stand_in_in_place_of_the_graph(monkeypatch):
    from rnncore_tensorflow import runtime

    monkeypatch.setattr(runtime, "XLA_COMPILE_S_GUESS", 0.0)
    chooser = runtime.PathChooser(["a", "b"], stand_in="b")
    chooser.ran((4, 8), "graph", 0.1)
    for _ in range(4 * runtime.XLA_TRIALS):
        if chooser.settled((4, 8)):
            break
        path = chooser.path((4, 8))
        assert path in ("a", "b"), "the graph is not timed once the shape's race has begun"
        chooser.ran((4, 8), path, 0.3 if path == "a" else 0.2)
    assert set(chooser._trials[(4, 8)]) == {"a", "b"} and chooser.decided[(4, 8)] == "b"
    chooser.ran((4, 8), "graph", 0.01)  # a graph call after the verdict (a fallback) changes nothing
    assert chooser.decided[(4, 8)] == "b"
    fitting = runtime.PathChooser(["a", "b"], fits=lambda shape, variant: variant == "a", stand_in="b")
    fitting.ran((4, 8), "graph", 0.1)
    assert fitting.path((4, 8)) == "a" and set(fitting._trials[(4, 8)]) == {"graph", "a"}, "no stand-in"


@pytest.mark.parametrize("length", ["short", "medium", "long"])
def test_path_chooser_takes_more_trials_of_short_calls_and_fewer_of_long_ones(length, monkeypatch):
    # Short calls jitter most: XLA_SHORT_TRIALS each, each after an untimed lead call; others 8.
    # Calls that add up to XLA_TRIAL_S per path average the jitter out themselves:
    # XLA_MIN_TRIALS each (a 3 s training step would otherwise take 48 s).
    from rnncore_tensorflow import runtime

    monkeypatch.setattr(runtime, "XLA_COMPILE_S_GUESS", 0.0)
    call_s, trials = {
        "short": (0.01, runtime.XLA_SHORT_TRIALS),
        "medium": (0.1, runtime.XLA_TRIALS),
        "long": (runtime.XLA_TRIAL_S / 2, runtime.XLA_MIN_TRIALS),
    }[length]
    short = length == "short"
    chooser = runtime.PathChooser(["a"])
    chooser.ran((4, 8), "graph", call_s)
    assert chooser.path((4, 8)) == "a"
    chooser.ran((4, 8), "a", 1.0)  # its compile
    calls = 0
    while not chooser.settled((4, 8)):
        path = chooser.path((4, 8))
        chooser.ran((4, 8), path, call_s if path == "graph" else call_s / 2)
        calls += 1
    assert [len(t) for t in chooser._trials[(4, 8)].values()] == [trials, trials]
    assert calls == 2 * trials * (2 if short else 1), "a lead call before each short trial only"
    assert chooser.decided[(4, 8)] == "a"
    assert runtime.XLA_MIN_TRIALS < runtime.XLA_TRIALS < runtime.XLA_SHORT_TRIALS


def test_path_chooser_times_short_calls_after_a_lead_call_in_their_turn(monkeypatch):
    # A path's first call after another path's runs slow (XLA's threads idle while the graph
    # ran): one call per turn, every trial would be such a call, and the race would keep the
    # path that switches in fastest, not the one that runs fastest in a loop.
    from rnncore_tensorflow import runtime

    monkeypatch.setattr(runtime, "XLA_COMPILE_S_GUESS", 0.0)
    in_a_loop, after_a_switch = {"graph": 0.004, "a": 0.002}, {"graph": 0.0045, "a": 0.006}
    chooser = runtime.PathChooser(["a"])
    chooser.ran((4, 8), "graph", 0.004)
    chooser.ran((4, 8), chooser.path((4, 8)), 1.0)  # "a"'s compile
    previous, turns = "a", []
    while not chooser.settled((4, 8)):
        path = chooser.path((4, 8))
        if path != previous:
            turns.append(path)
        chooser.ran((4, 8), path, (in_a_loop if path == previous else after_a_switch)[path])
        previous = path
    assert chooser._trials[(4, 8)] == {
        "graph": [in_a_loop["graph"]] * runtime.XLA_SHORT_TRIALS,
        "a": [in_a_loop["a"]] * runtime.XLA_SHORT_TRIALS,
    }, "only the calls after a turn's first are timed"
    assert chooser.decided[(4, 8)] == "a"
    assert len(turns) == 2 * runtime.XLA_SHORT_TRIALS, "one trial a turn, round robin"


def test_keras_step_race_times_steps_under_a_fifth_of_a_second_after_a_lead_step():
    # Measured (2-layer LSTM, batch 1, length 32, hidden 512): the graph's step right after an
    # XLA step ran 57 ms against 48 in a loop, XLA's 52 either way. One step per turn, the
    # race would keep XLA; the trainer's race leads each turn of steps this short.
    from rnncore_tensorflow import runtime
    from rnncore_tensorflow.train import SHAPED, STEP_LEAD_S, XLA, Trainer

    assert STEP_LEAD_S > 0.057
    spec = _spec("float32", cell="lstm")
    trainer = Trainer(rnncore.build(spec, backend="tensorflow"), CONFIGS["adam"])
    chooser = trainer._step_paths(False).chooser
    in_a_loop, after_a_switch = {SHAPED: 0.048, XLA: 0.052}, {SHAPED: 0.057, XLA: 0.052}
    shape = (1, 32)
    chooser.ran(shape, runtime.GRAPH, 10.0)  # the graph has spent a compile's time on the shape
    previous = None
    while not chooser.settled(shape):
        path = chooser.path(shape)
        step_s = (in_a_loop if path == previous else after_a_switch)[path]
        chooser.ran(shape, path, step_s if chooser.compiled(shape, path) else 1.0)  # else: its compile
        previous = path
    assert set(chooser._trials[shape]) == {XLA, SHAPED}
    assert set(chooser._trials[shape][SHAPED]) == {in_a_loop[SHAPED]}, "no step after a switch timed"
    assert chooser.decided[shape] == SHAPED


def test_keras_whole_step_falls_back_to_the_graph_when_xla_cannot_compile_it(monkeypatch):
    import tensorflow as tf
    from rnncore_tensorflow import runtime
    from rnncore_tensorflow.train import Trainer

    step = Trainer._step

    def printing_step(self, *args, **kwargs):
        tf.print("step")  # PrintV2 has no XLA kernel: compiling the whole step fails
        return step(self, *args, **kwargs)

    monkeypatch.setattr(runtime, "XLA_COMPILE_S_GUESS", 0.0)
    monkeypatch.setattr(runtime, "XLA_TRIAL_S", float("inf"))  # all trials, however slow
    monkeypatch.setattr(runtime, "XLA_SHORT_TRIALS", 8)  # each after a lead call: within 50 steps
    monkeypatch.setattr(Trainer, "_step", printing_step)
    spec = _spec("float64", cell="lstm")
    config, start = CONFIGS["adam"], rnncore.init_weights(spec, seed=4)
    torch_model, _, _ = _train(spec, "torch", config, start)
    weights, trainer = _keras_weights_after_training(spec, config, start)
    chooser = trainer._paths[False].chooser
    assert chooser.paths == ["graph", "graph_for_shape"], "the graph traced per shape stays in the race"
    assert chooser.settled((6, 9)) and chooser.path((6, 9)) in chooser.paths
    assert all(len(t) == runtime.XLA_SHORT_TRIALS for t in chooser._trials[(6, 9)].values())
    assert chooser.compiled_shapes == {(6, 9)}, "the compile should have been tried"
    assert trainer.use_xla, "the update alone still compiles"
    assert int(trainer.optimizer_state()["step"]) == STEPS, "the failed compile must not count a step"
    expected = rnncore.get_weights(torch_model)
    for key in expected:
        assert_close(weights[key], expected[key], "training", "float64")


def _dropout_spec():
    spec = _spec("float64").to_dict()
    spec["encoder"]["dropout"] = 0.3
    spec["head"]["dropout"] = 0.3
    return rnncore.ModelSpec.from_dict(spec)


def _steps_with_dropout(backend: str, seed: int, resume_after: int | None = None):
    """6 steps of a model with dropout; with `resume_after`, the weights and optimizer state move
    to a fresh model and trainer after that many steps, as `--resume` does, and the global
    random generators draw in between (a user's own draws must not change the masks)."""
    spec, config = _dropout_spec(), TrainConfig(optimizer="adam", lr=0.01, seed=seed)
    backend_api = rnncore.get_backend(backend)
    model = rnncore.build(spec, backend=backend, weights=rnncore.init_weights(spec, seed=1))
    trainer = backend_api.make_trainer(model, config)
    for step, (x, lengths, y) in enumerate(_batches(spec, 6, seed=4)):
        if step == resume_after:
            weights, state = rnncore.get_weights(model), trainer.optimizer_state()
            random.random(), np.random.random(3)  # the global generators (a fresh one would touch none)
            if backend == "torch":
                import torch

                torch.rand(5)
            model = rnncore.build(spec, backend=backend, weights=weights)
            trainer = backend_api.make_trainer(model, config)
            trainer.load_optimizer_state(state)
        trainer.step(x, lengths, y, 0.01)
    return rnncore.get_weights(model)


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_dropout_masks_follow_the_seed_and_survive_a_resume(backend):
    """Two runs of one seed end at the same weights (bit for bit on torch; Keras to float64
    rounding, as its step races its paths), a resumed run at the uninterrupted one's, and
    another seed elsewhere (the masks are drawn, and from the seed)."""
    straight = _steps_with_dropout(backend, seed=3)
    resumed = _steps_with_dropout(backend, seed=3, resume_after=3)
    other = _steps_with_dropout(backend, seed=4)
    for key in straight:
        if backend == "torch":
            np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)
        else:
            assert_close(resumed[key], straight[key], "training", "float64")
    assert max(float(np.max(np.abs(other[k] - straight[k]))) for k in straight) > 1e-4
