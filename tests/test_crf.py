"""The CRF head: the numpy oracle is right, both backends compute it, and pytorch-crf agrees.

- the oracle's log-likelihood and Viterbi path against brute-force enumeration of every path,
  its gradients against central differences;
- torch and Keras log-likelihood and gradients (emissions and the CRF weights) against the
  oracle and each other, at the "outputs" / "gradients" tolerances of `rnncore.tolerances`;
- decoded paths identical on the oracle, torch and Keras, with and without IOB constraints,
  for CRF and softmax taggers;
- pytorch-crf (`torchcrf.CRF`) as a peer: the same log-likelihood and paths once its
  parameters hold ours.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch  # before TensorFlow (see the registry)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnncore
from rnncore import crf
from rnncore.parity import random_batch
from rnncore.tolerances import assert_close, tolerance

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _problem(batch: int = 7, steps: int = 6, tags: int = 5, seed: int = 0, dtype: str = "float64"):
    """Random emissions, gold tags, lengths (a full row and a length-1 row), CRF weights, cotangent."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0], lengths[1] = steps, 1
    emissions = (rng.standard_normal((batch, steps, tags)) * 2).astype(dtype)
    gold = rng.integers(0, tags, size=(batch, steps))
    weights = {
        "crf.transitions": rng.standard_normal((tags, tags)).astype(dtype),
        "crf.start": rng.standard_normal(tags).astype(dtype),
        "crf.end": rng.standard_normal(tags).astype(dtype),
    }
    cotangent = rng.standard_normal(batch).astype(dtype)
    return emissions, gold, lengths.astype(np.int64), weights, cotangent


def _every_path(emissions, length, params):
    """{path: score} of every tag path of one row, scored step by step."""
    scores = {}
    for path in itertools.product(range(emissions.shape[-1]), repeat=length):
        score = params.start[path[0]] + params.end[path[-1]]
        score += sum(emissions[t, tag] for t, tag in enumerate(path))
        score += sum(params.transitions[a, b] for a, b in itertools.pairwise(path))
        scores[path] = score
    return scores


def test_oracle_log_likelihood_and_viterbi_match_enumerating_every_path():
    emissions, gold, lengths, weights, _ = _problem(batch=5, steps=4, tags=3)
    params = crf.crf_parameters(weights)
    ll = crf.log_likelihood(emissions, gold, lengths, params)
    paths, best = crf.viterbi(emissions, lengths, params)
    for row, n in enumerate(lengths):
        scores = _every_path(emissions[row], int(n), params)
        log_z = np.log(np.sum(np.exp(list(scores.values()))))
        assert ll[row] == pytest.approx(scores[tuple(gold[row, :n])] - log_z, abs=1e-12)
        argmax = max(scores, key=scores.__getitem__)
        assert tuple(paths[row, :n]) == argmax
        assert best[row] == pytest.approx(scores[argmax], abs=1e-12)
        assert (paths[row, n:] == crf.PAD_TAG).all()


def test_oracle_gradients_match_central_differences():
    emissions, gold, lengths, weights, cot = _problem(batch=4, steps=5, tags=3, seed=1)
    grads = crf.log_likelihood_grads(emissions, gold, lengths, crf.crf_parameters(weights), cot)

    def objective(e, w):
        return float((crf.log_likelihood(e, gold, lengths, crf.crf_parameters(w)) * cot).sum())

    eps = 1e-6
    tensors = {"emissions": emissions, **weights}
    for name, value in tensors.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            step = np.zeros_like(value)
            step[index] = eps
            plus = {**tensors, name: value + step}
            minus = {**tensors, name: value - step}
            numeric[index] = (
                objective(plus.pop("emissions"), plus) - objective(minus.pop("emissions"), minus)
            ) / (2 * eps)
        np.testing.assert_allclose(grads[name], numeric, atol=1e-7, err_msg=name)
    # padded steps take no part
    for row, n in enumerate(lengths):
        assert not grads["emissions"][row, n:].any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backends_log_likelihood_and_gradients_match_the_oracle_and_each_other(backend, dtype):
    emissions, gold, lengths, weights, cot = _problem(seed=2, dtype=dtype)
    params = crf.crf_parameters(weights)
    expected_ll = crf.log_likelihood(emissions, gold, lengths, params)
    expected = crf.log_likelihood_grads(emissions, gold, lengths, params, cot)
    ll, grads = rnncore.get_backend(backend).crf_log_likelihood_and_grads(
        emissions, gold, lengths, weights, cot
    )
    assert ll.dtype == np.dtype(dtype)
    assert_close(ll, expected_ll, "outputs", dtype)
    assert set(grads) == set(expected)
    for name in expected:
        assert_close(grads[name], expected[name], "gradients", dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_and_keras_log_likelihood_and_gradients_agree(dtype):
    emissions, gold, lengths, weights, cot = _problem(seed=3, dtype=dtype)
    ll_t, grads_t = rnncore.get_backend("torch").crf_log_likelihood_and_grads(
        emissions, gold, lengths, weights, cot
    )
    ll_k, grads_k = rnncore.get_backend("tensorflow").crf_log_likelihood_and_grads(
        emissions, gold, lengths, weights, cot
    )
    assert_close(ll_k, ll_t, "outputs", dtype)
    for name, grad in grads_t.items():
        assert_close(grads_k[name], grad, "gradients", dtype)


def _crf_spec(dtype: str = "float32", crf_head: bool = True, tags: int = len(TAGS)) -> rnncore.ModelSpec:
    return rnncore.ModelSpec.from_dict(
        {
            "input": {"kind": "tokens", "vocab_size": 30, "embedding_dim": 6, "padding_idx": 0},
            "encoder": {"cell": "lstm", "hidden_size": 5, "bidirectional": True},
            "pooling": "none",
            "head": {"num_outputs": tags, "task": "tagging", "crf": crf_head},
            "dtype": dtype,
        }
    )


def _near_ties(emissions, lengths, params, dtype) -> int:
    """Rows whose best and second-best path scores lie within the outputs tolerance (where the
    two float computations may pick either): enumerated, so keep rows short."""
    tol = tolerance("outputs", dtype)
    ties = 0
    for row, n in enumerate(lengths):
        scores = sorted(_every_path(emissions[row], int(n), params).values())
        if len(scores) > 1 and scores[-1] - scores[-2] <= tol.atol + tol.rtol * abs(scores[-1]):
            ties += 1
    return ties


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("crf_head", [True, False], ids=["crf", "softmax"])
@pytest.mark.parametrize("scheme", [None, "IOB2"])
def test_decoded_paths_are_identical_on_the_oracle_torch_and_keras(dtype, crf_head, scheme):
    spec = _crf_spec(dtype, crf_head)
    weights = rnncore.init_weights(spec, seed=5)
    if crf_head:  # larger transition scores than the initial ones, so that they decide paths
        weights["crf.transitions"] = np.random.default_rng(6).standard_normal((5, 5)).astype(dtype)
    x, lengths = random_batch(spec, batch=16, max_len=5, seed=7)
    allowed = None if scheme is None else crf.allowed_transitions(TAGS, scheme)
    outputs = rnncore.reference_forward(spec, weights, x, lengths)
    expected = crf.decode(spec, weights, outputs, lengths, allowed)
    if crf_head and allowed is None:
        assert _near_ties(outputs, lengths, crf.crf_parameters(weights), dtype) == 0
    for backend in ("torch", "tensorflow"):
        model = rnncore.build(spec, backend=backend, weights=weights)
        paths = rnncore.get_backend(backend).decode(model, x, lengths, allowed)
        assert paths.dtype == np.int64
        np.testing.assert_array_equal(paths, expected, err_msg=backend)


def test_constraints_change_an_illegal_path_into_the_best_legal_one():
    # the emissions alone say O I-PER; IOB2 forbids I-PER after O (and first)
    emissions = np.log(np.array([[[0.6, 0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.6, 0.1, 0.1]]]))
    spec = _crf_spec(crf_head=False)
    lengths = np.array([2])
    assert crf.decode(spec, {}, emissions, lengths).tolist() == [[0, 2]]
    allowed = crf.allowed_transitions(TAGS, "IOB2")
    # legal options: O O (0.06), B-PER I-PER (0.06), O B-PER (0.06), ...: ties go to the lowest ids
    assert crf.decode(spec, {}, emissions, lengths, allowed).tolist() == [[0, 0]]


@pytest.mark.parametrize(
    ("scheme", "tags", "start", "end", "forbidden"),
    [
        ("IOB2", ["O", "B-X", "I-X", "I-Y"], ["O", "B-X"], ["O", "B-X", "I-X", "I-Y"],
         [("O", "I-X"), ("O", "I-Y"), ("B-X", "I-Y"), ("I-X", "I-Y"), ("I-Y", "I-X")]),
        ("IOB1", ["O", "B-X", "I-X", "I-Y"], ["O", "I-X", "I-Y"], ["O", "B-X", "I-X", "I-Y"],
         [("O", "B-X"), ("I-Y", "B-X")]),
        ("IOBES", ["O", "B-X", "I-X", "E-X", "S-X"], ["O", "B-X", "S-X"], ["O", "E-X", "S-X"],
         [(a, b) for a in ("O", "E-X", "S-X") for b in ("I-X", "E-X")]
         + [(a, b) for a in ("B-X", "I-X") for b in ("O", "B-X", "S-X")]),
    ],
)  # fmt: skip
def test_allowed_transitions_follow_each_scheme(scheme, tags, start, end, forbidden):
    allowed = crf.allowed_transitions(tags, scheme)
    assert [t for t, ok in zip(tags, allowed.start, strict=True) if ok] == start
    assert [t for t, ok in zip(tags, allowed.end, strict=True) if ok] == end
    refused = {
        (a, b) for i, a in enumerate(tags) for j, b in enumerate(tags) if not allowed.transitions[i, j]
    }
    assert refused == set(forbidden)


def test_tags_outside_the_scheme_are_refused_by_name():
    with pytest.raises(ValueError, match="'E-X' is not a IOB2 tag"):
        crf.allowed_transitions(["O", "B-X", "E-X"], "IOB2")


def _legal_iob2(tags: list[str]) -> bool:
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    types=st.integers(1, 3),
    steps=st.integers(1, 8),
    crf_head=st.booleans(),
)
def test_constrained_iob2_decoding_never_yields_an_illegal_sequence(seed, types, steps, crf_head):
    labels = ["O"] + [f"{p}-T{k}" for k in range(types) for p in "BI"]
    spec = _crf_spec("float64", crf_head, tags=len(labels))
    rng = np.random.default_rng(seed)
    # emissions and transitions that favour I- tags, so that unconstrained paths are often illegal
    emissions = rng.standard_normal((4, steps, len(labels))) * 3
    emissions[:, :, 2::2] += 2.0
    weights = {
        "crf.transitions": rng.standard_normal((len(labels), len(labels))) * 3,
        "crf.start": rng.standard_normal(len(labels)),
        "crf.end": rng.standard_normal(len(labels)),
    }
    lengths = rng.integers(1, steps + 1, size=4)
    paths = crf.decode(spec, weights, emissions, lengths, crf.allowed_transitions(labels, "IOB2"))
    for row, n in enumerate(lengths):
        assert _legal_iob2([labels[t] for t in paths[row, :n]])


def test_pytorch_crf_gives_the_same_log_likelihood_and_paths():
    from torchcrf import CRF

    emissions, gold, lengths, weights, _ = _problem(batch=9, steps=7, seed=8)
    peer = CRF(5, batch_first=True).double()
    with torch.no_grad():  # its transitions[i, j] score i -> j, as ours
        peer.transitions.copy_(torch.from_numpy(weights["crf.transitions"]))
        peer.start_transitions.copy_(torch.from_numpy(weights["crf.start"]))
        peer.end_transitions.copy_(torch.from_numpy(weights["crf.end"]))
    mask = torch.from_numpy(np.arange(7)[None, :] < lengths[:, None])
    e, tags = torch.from_numpy(emissions), torch.from_numpy(gold)
    theirs = peer(e, tags, mask=mask, reduction="none").detach().numpy()
    params = crf.crf_parameters(weights)
    assert_close(crf.log_likelihood(emissions, gold, lengths, params), theirs, "outputs", "float64")
    ours_torch, _ = rnncore.get_backend("torch").crf_log_likelihood_and_grads(
        emissions, gold, lengths, weights, np.ones(9)
    )
    assert_close(ours_torch, theirs, "outputs", "float64")
    their_paths = peer.decode(e, mask=mask)
    paths, _ = crf.viterbi(emissions, lengths, params)
    assert [paths[row, :n].tolist() for row, n in enumerate(lengths)] == their_paths


def test_crf_models_carry_their_weights_on_both_backends():
    spec = _crf_spec("float64")
    weights = rnncore.init_weights(spec, seed=9)
    assert rnncore.canonical_shapes(spec)["crf.transitions"] == (5, 5)
    for backend in ("torch", "tensorflow"):
        model = rnncore.build(spec, backend=backend, weights=weights)
        got = rnncore.get_weights(model)
        assert set(got) == set(weights)
        for name in ("crf.transitions", "crf.start", "crf.end"):
            np.testing.assert_array_equal(got[name], weights[name])


def test_the_crf_loss_chains_the_labelled_steps_and_skips_ignored_ones(backend):
    # a word's later sub-tokens are labelled -100: the CRF scores the chain of the other steps
    from rnncore.train import TrainConfig
    from rnncore.train.losses import IGNORE_INDEX, reference_loss

    spec = _crf_spec("float64")
    weights = rnncore.init_weights(spec, seed=2)
    weights["crf.transitions"] = np.random.default_rng(3).standard_normal((5, 5))
    x, lengths = random_batch(spec, batch=4, max_len=6, seed=4)
    y = x % 5
    y[0, 1] = y[0, 4] = y[3, 0] = IGNORE_INDEX
    logits = rnncore.reference_forward(spec, weights, x, lengths)
    # by hand: row 0 without steps 1 and 4, row 3 without step 0, the others as they are
    params, total = crf.crf_parameters(weights), 0.0
    for row, n in enumerate(lengths):
        steps = [t for t in range(n) if y[row, t] != IGNORE_INDEX]
        total += crf.log_likelihood(
            logits[row : row + 1, steps], y[row : row + 1, steps], [len(steps)], params
        )[0]
    labelled = int(((y != IGNORE_INDEX) & (np.arange(6) < lengths[:, None])).sum())
    expected = -total / labelled
    assert reference_loss(spec, logits, y, lengths, weights) == pytest.approx(expected, rel=1e-12)
    model = rnncore.build(spec, backend=backend, weights=weights)
    trainer = rnncore.get_backend(backend).make_trainer(model, TrainConfig(optimizer="sgd", lr=1e-9))
    assert trainer.step(x, lengths, y, 1e-9) == pytest.approx(expected, rel=1e-10)


def test_a_crf_needs_per_step_tags():
    with pytest.raises(
        rnncore.SpecError, match=r"head\.crf: a CRF scores a tag for every step; it needs task 'tagging'"
    ):
        rnncore.HeadSpec(num_outputs=3, task="classification", crf=True)
    with pytest.raises(rnncore.SpecError, match=r"head\.crf: got 'yes'; expected true or false"):
        rnncore.HeadSpec(num_outputs=3, task="tagging", crf="yes")


def test_a_spec_without_a_crf_reads_and_writes_as_before():
    spec = _crf_spec(crf_head=False)
    assert "crf" not in spec.to_dict()["head"]
    assert spec.head is not None and spec.head.crf is False
    assert "crf." not in " ".join(rnncore.canonical_shapes(spec))


def test_a_crf_spec_round_trips_and_fits_the_json_schema():
    import jsonschema

    spec = _crf_spec()
    data = spec.to_dict()
    assert data["head"]["crf"] is True
    assert rnncore.ModelSpec.from_dict(data) == spec
    jsonschema.validate(data, rnncore.json_schema())
    data["head"]["task"] = "classification"
    data["pooling"] = "mean"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, rnncore.json_schema())


def _tagging_batches(spec, n: int):
    """Ten batches in turn, whose tags follow the tokens: something to learn in a few steps."""
    for i in range(n):
        x, lengths = random_batch(spec, batch=6, max_len=9, seed=100 + i % 10)
        yield x, lengths, x % spec.head.num_outputs


def test_crf_training_loss_is_the_oracles_per_token_negative_log_likelihood(backend):
    from rnncore.train import TrainConfig
    from rnncore.train.losses import reference_loss

    spec = _crf_spec("float64")
    weights = rnncore.init_weights(spec, seed=1)
    x, lengths, y = next(_tagging_batches(spec, 1))
    logits = rnncore.reference_forward(spec, weights, x, lengths)
    expected = reference_loss(spec, logits, y, lengths, weights)
    ll = crf.log_likelihood(logits, y, lengths, crf.crf_parameters(weights))
    assert expected == pytest.approx(-ll.sum() / lengths.sum(), rel=1e-12)
    model = rnncore.build(spec, backend=backend, weights=weights)
    trainer = rnncore.get_backend(backend).make_trainer(model, TrainConfig(optimizer="sgd", lr=1e-9))
    assert trainer.step(x, lengths, y, 1e-9) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fifty_crf_training_steps_end_at_the_same_weights_on_both_backends(dtype):
    from rnncore.train import TrainConfig

    spec = _crf_spec(dtype)
    config = TrainConfig(optimizer="adam", lr=0.02)
    start = rnncore.init_weights(spec, seed=4)
    models, losses = {}, {}
    for backend in ("torch", "tensorflow"):
        models[backend] = rnncore.build(spec, backend=backend, weights=start)
        trainer = rnncore.get_backend(backend).make_trainer(models[backend], config)
        losses[backend] = [trainer.step(x, n, y, config.lr) for x, n, y in _tagging_batches(spec, 50)]
    assert np.mean(losses["torch"][-10:]) < np.mean(losses["torch"][:10]), "training should lower the loss"
    np.testing.assert_allclose(
        losses["tensorflow"], losses["torch"], rtol=1e-4 if dtype == "float32" else 1e-9
    )
    a, b = rnncore.get_weights(models["torch"]), rnncore.get_weights(models["tensorflow"])
    assert float(np.abs(a["crf.transitions"] - start["crf.transitions"]).max()) > 1e-2, "the CRF must learn"
    for key in a:
        assert_close(b[key], a[key], "training", dtype)


def _ner_conll(path, sentences: int = 150):
    from rnncore.data import load_bundled

    ner = load_bundled("ner_iob2")
    with path.open("w", encoding="utf-8") as handle:
        for words, tags in zip(ner.sentences[:sentences], ner.tags[:sentences], strict=True):
            handle.writelines(f"{w}\t{t}\n" for w, t in zip(words, tags, strict=True))
            handle.write("\n")
    return path


def test_cli_trains_a_constrained_crf_tagger_and_both_backends_score_it_alike(tmp_path, capsys):
    import json

    from rnncore import cli
    from rnncore.train.loop import tag_paths
    from rnncore.train.run import load_run, read_dataset, split_dataset

    conll = _ner_conll(tmp_path / "ner.conll")
    run = tmp_path / "ner"
    args = ["train", "--task", "tagging", "--data", str(conll), "--out", str(run), "--epochs", "2", "--quiet",
            "--crf", "--constrain-decoding", "IOB2"]  # fmt: skip
    assert cli.main(args) == 0
    assert json.loads((run / "run.json").read_text())["constrain_decoding"] == "IOB2"
    model, encoder, info = load_run(run)
    assert rnncore.spec_of(model).head.crf
    scores = {}
    for backend in ("torch", "tensorflow"):
        capsys.readouterr()
        assert cli.main(["evaluate", str(run), "--json", "--backend", backend]) == 0
        scores[backend] = json.loads(capsys.readouterr().out)
    assert {"accuracy", "entity_f1", "tagging"} <= set(scores["torch"])
    assert scores["torch"]["tagging"]["metric"] == "entity"
    assert scores["tensorflow"] == scores["torch"]  # the same decoded tags, so the same counts
    # what evaluate scored: legal IOB2 on every test sentence
    test = encoder.encode(
        split_dataset(read_dataset(str(conll), "tagging"), info["train"]["seed"])["test"], "t"
    )
    logits = rnncore.predict(model, test.inputs, test.lengths)
    names = encoder.labels.labels
    paths = tag_paths(model, logits, test.lengths, test.targets, names, "IOB2")
    for row, n in enumerate(test.lengths):
        words = [names[t] for t, y in zip(paths[row, :n], test.targets[row, :n], strict=True) if y >= 0]
        assert _legal_iob2(words)


def test_cli_refuses_a_crf_outside_tagging(tmp_path, capsys):
    from rnncore import cli

    args = ["train", "--task", "sequence-classification", "--out", str(tmp_path / "r"), "--crf", "--quiet"]
    assert cli.main(args) == 2
    assert "--crf is for --task tagging" in capsys.readouterr().err


def _trained_looking_crf_model(backend: str, dtype: str = "float32"):
    spec = _crf_spec(dtype)
    weights = rnncore.init_weights(spec, seed=11)
    weights["crf.transitions"] = np.random.default_rng(12).standard_normal((5, 5)).astype(dtype)
    return rnncore.build(spec, backend=backend, weights=weights)


@pytest.mark.parametrize("fmt", ["torchscript", "savedmodel"])
def test_exported_crf_taggers_decode_inside_the_file_as_the_model_does(fmt, tmp_path):
    model = _trained_looking_crf_model("torch")
    result = rnncore.export(model, tmp_path / f"tagger.{fmt}", fmt)
    assert result.tags_match is True and result.diff.ok
    backend = rnncore.registry.backend_for_format(fmt)
    x, lengths = random_batch(rnncore.spec_of(model), batch=9, max_len=11, seed=13)
    weights = rnncore.get_weights(model)
    expected = crf.decode(rnncore.spec_of(model), weights, rnncore.predict(model, x, lengths), lengths)
    np.testing.assert_array_equal(
        backend.decode_exported(tmp_path / f"tagger.{fmt}", fmt, x, lengths), expected
    )


def test_an_export_whose_tags_differ_is_removed(tmp_path, monkeypatch):
    model = _trained_looking_crf_model("torch")
    backend = rnncore.get_backend("torch")
    monkeypatch.setattr(backend, "decode_exported", lambda path, fmt, x, lengths: np.zeros(x.shape, np.int64))
    with pytest.raises(rnncore.ExportError, match="Viterbi tag paths DIFFER"):
        rnncore.export(model, tmp_path / "tagger.pt", "torchscript")
    assert not (tmp_path / "tagger.pt").exists()


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_formats_without_a_viterbi_decoder_refuse_a_crf_tagger(fmt, tmp_path):
    with pytest.raises(
        rnncore.ExportError, match=f"{'ONNX' if fmt == 'onnx' else 'TFLite'} export of a CRF tagger"
    ):
        rnncore.export(_trained_looking_crf_model("torch"), tmp_path / "tagger", fmt)


class BiLstmTorchCrf(nn.Module):
    """A BiLSTM + pytorch-crf tagger as pytorch-crf's users write it: forward -> emissions.

    (At module level: torch.fx wraps pack_padded_sequence only where it is a global name.)
    """

    def __init__(self, vocab: int = 30, tags: int = 5, crf_tags: int | None = None):
        from torchcrf import CRF

        super().__init__()
        self.embedding = nn.Embedding(vocab, 6, padding_idx=0)
        self.lstm = nn.LSTM(6, 5, batch_first=True, bidirectional=True)
        self.emissions = nn.Linear(10, tags)
        self.crf = CRF(crf_tags or tags, batch_first=True)

    def forward(self, ids, lengths):
        packed = pack_padded_sequence(self.embedding(ids), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True)
        return self.emissions(out)


def _bilstm_torchcrf(**sizes):
    torch.manual_seed(0)
    model = BiLstmTorchCrf(**sizes)
    with torch.no_grad():
        model.crf.transitions.normal_()
    return model.eval()


def test_a_bilstm_with_a_pytorch_crf_imports_with_its_crf_and_decodes_alike():
    native = _bilstm_torchcrf()
    spec, weights = rnncore.from_native(native)
    assert spec.head.crf and spec.head.task == "tagging" and spec.head.num_outputs == 5
    np.testing.assert_array_equal(weights["crf.transitions"], native.crf.transitions.detach().numpy())
    x, lengths = random_batch(spec, batch=8, max_len=7, seed=14)
    mask = torch.from_numpy(np.arange(7)[None, :] < lengths[:, None])
    with torch.no_grad():
        emissions = native(torch.from_numpy(x), torch.from_numpy(lengths))
        theirs = native.crf.decode(emissions, mask=mask)
    for backend in ("torch", "tensorflow"):
        model = rnncore.build(spec, backend=backend, weights=weights)
        paths = rnncore.get_backend(backend).decode(model, x, lengths)
        assert [paths[row, :n].tolist() for row, n in enumerate(lengths)] == theirs, backend


def test_a_pytorch_crf_whose_size_differs_from_the_emissions_is_refused():
    native = _bilstm_torchcrf(crf_tags=4)
    with pytest.raises(rnncore.UnsupportedNativeModel, match="the CRF has 4 tags but the forward scores 5"):
        rnncore.from_native(native)


class TutorialBiLstmCrf(nn.Module):
    """The PyTorch BiLSTM-CRF tutorial's shape, written small: transitions[to, from] on the model,
    <START>/<STOP> among the tags, one sentence at a time, Viterbi in Python loops. (The tutorial
    draws a random initial state per call; this one starts from zeros, as rnncore does.)"""

    def __init__(self, vocab: int, tag_to_ix: dict[str, int], embedding_dim: int = 6, hidden_dim: int = 8):
        super().__init__()
        self.tag_to_ix, self.tagset_size = tag_to_ix, len(tag_to_ix)
        self.word_embeds = nn.Embedding(vocab, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim // 2, num_layers=1, bidirectional=True)
        self.hidden2tag = nn.Linear(hidden_dim, self.tagset_size)
        self.transitions = nn.Parameter(torch.randn(self.tagset_size, self.tagset_size))
        self.transitions.data[tag_to_ix["<START>"], :] = -10000
        self.transitions.data[:, tag_to_ix["<STOP>"]] = -10000

    def _get_lstm_features(self, sentence):
        embeds = self.word_embeds(sentence).view(len(sentence), 1, -1)
        lstm_out, _ = self.lstm(embeds)
        return self.hidden2tag(lstm_out.view(len(sentence), -1))

    def _viterbi_decode(self, feats):
        forward_var = torch.full((1, self.tagset_size), -10000.0)
        forward_var[0][self.tag_to_ix["<START>"]] = 0
        backpointers = []
        for feat in feats:
            scores = forward_var + self.transitions  # [next, prev]
            best = scores.argmax(dim=1)
            backpointers.append(best)
            forward_var = (scores.gather(1, best[:, None])[:, 0] + feat).view(1, -1)
        terminal = forward_var + self.transitions[self.tag_to_ix["<STOP>"]]
        best_tag = int(terminal.argmax())
        path = [best_tag]
        for best in reversed(backpointers):
            best_tag = int(best[best_tag])
            path.append(best_tag)
        assert path.pop() == self.tag_to_ix["<START>"]
        return path[::-1]

    def forward(self, sentence):
        return self._viterbi_decode(self._get_lstm_features(sentence))


def test_the_pytorch_tutorials_bilstm_crf_imports_and_decodes_as_it_does():
    tag_to_ix = {"B": 0, "I": 1, "O": 2, "<START>": 3, "<STOP>": 4}
    torch.manual_seed(1)
    native = TutorialBiLstmCrf(vocab=30, tag_to_ix=tag_to_ix).eval()
    spec, weights = rnncore.from_native(native, pooling="none")
    assert spec.head.crf and spec.head.num_outputs == 3  # <START> and <STOP> are not tags of the path
    x, lengths = random_batch(spec.replace(input={**spec.input.to_dict(), "padding_idx": 0}), 10, 7, seed=15)
    with torch.no_grad():
        theirs = [native(torch.from_numpy(x[row, :n])) for row, n in enumerate(lengths)]
    for backend in ("torch", "tensorflow"):
        model = rnncore.build(spec, backend=backend, weights=weights)
        paths = rnncore.get_backend(backend).decode(model, x, lengths)
        assert [paths[row, :n].tolist() for row, n in enumerate(lengths)] == theirs, backend


def test_a_transitions_parameter_without_the_tutorials_tags_is_refused():
    native = TutorialBiLstmCrf(vocab=30, tag_to_ix={"B": 0, "I": 1, "O": 2, "<START>": 3, "<STOP>": 4})
    native.tag_to_ix = {"B": 0, "I": 1, "O": 2}
    with pytest.raises(rnncore.UnsupportedNativeModel, match="tag_to_ix dict with '<START>' and '<STOP>'"):
        rnncore.from_native(native, pooling="none")
