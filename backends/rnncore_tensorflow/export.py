"""Exports of rnncore Keras models: a TensorFlow SavedModel folder, or one TFLite file.

Both formats serve one signature, `serving_default`, with the same named inputs:

- `inputs`: token ids `(B, T)` **int64** (as the Keras model takes them), or features
  `(B, T, F)` in the spec's dtype;
- `lengths`: `(B,)` **int32** valid steps per row, each in 1..T (rows right padded);

and one output, `outputs`: logits `(B, K)`, per-step logits `(B, T, K)` for tagging (zero at
padded steps), or the pooled / per-step features when the spec has no head. Batch size and
sequence length are dynamic in both formats; the graph is in inference mode (no dropout).
`run_exported` casts whatever integer dtypes it is given.

A CRF tagger's SavedModel has a second output, `tags`: its Viterbi tag paths `(B, T)` int64
(0 at padded steps), decoded inside the graph. TFLite refuses a CRF tagger: the decoder's
loops over time keep TensorLists that need Flex ops (see below).

SavedModel ("savedmodel") traces the Keras model itself, so it computes exactly what
`rnncore.predict` computes (float64 too) and keeps its variables. TF Serving loads the folder.

TFLite ("tflite") cannot take the Keras graph. A masked Keras RNN is a `while` loop whose
outputs gather in a TensorList with a dynamic `(B, H)` element shape; the converter can lower
TensorLists to builtin ops only for static element shapes, so it asks for SELECT_TF_OPS
(Flex), which phone runtimes often lack. The fused UNIDIRECTIONAL_SEQUENCE_LSTM op takes no
mask and has no GRU sibling. So the TFLite file is built from the model's canonical weights
as a second, plain TensorFlow graph of the SAME function, using builtin ops only:

- each direction is an explicit `while` loop over time whose outputs grow by concatenation
  (a loop variable, no TensorList); the input projection of every step is one matmul first;
- the forward direction runs over the whole padded row: pads come after the valid steps, so
  the valid outputs are unchanged, and padded steps are zeroed afterwards;
- the backward direction reverses each row within its own length (`reverse_sequence`, a
  builtin), runs forward, and reverses back, so it starts at each row's last valid step;
- residuals, pooling (last/mean/max/attention over valid steps) and the head are the same
  formulas as the Keras layers; gelu is written in its erf form, which the converter fuses
  into the builtin GELU op.

Every spec feature exports to both formats. TFLite runs float32 only: a float64 model is
refused with `ExportError` (export the SavedModel, or rebuild the spec with dtype float32).
Cost: TFLite's while loop copies its loop variables every step, so gathering the per-step
outputs takes time quadratic in T (measured, bi-LSTM H=128, B=8: ~0.2 s at T=200, ~2 s at
T=800 on a busy CPU): fine for sentences, slow for thousands of steps.

Writes are atomic: the artifact is written under a temporary name in the target's folder and
moved into place with `os.replace`; a failed export leaves nothing behind.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from rnncore.batch import InputError
from rnncore.export import ExportError
from rnncore.spec import ModelSpec
from rnncore.weights import Weights, head_layer_names, layer_prefix

from .crf import viterbi
from .model import crf_layer, get_weights, spec_of
from .runtime import input_signature

EXPORT_FORMATS = ("savedmodel", "tflite")
SIGNATURE = "serving_default"
INPUT_NAMES = ("inputs", "lengths")
OUTPUT_NAME = "outputs"
TAGS_NAME = "tags"  # a CRF tagger's decoded paths
# The only op set the TFLite converter may use: no Flex (SELECT_TF_OPS), no custom ops.
TFLITE_OPS = (tf.lite.OpsSet.TFLITE_BUILTINS,)

_SQRT_HALF = math.sqrt(0.5)


# ---- public API ------------------------------------------------------------------------


def export(model: Any, path: str | Path, fmt: str) -> None:
    """Write `model` as a SavedModel folder ("savedmodel") or one TFLite file ("tflite").

    See the module docstring for the signature. Raises `ExportError` for an unknown format,
    a float64 model to TFLite, or a target that exists and is not a replaceable artifact.
    """
    spec = spec_of(model)
    if fmt not in EXPORT_FORMATS:
        raise ExportError(
            f"unknown export format {fmt!r}; the Keras backend writes {', '.join(EXPORT_FORMATS)}"
        )
    if fmt == "tflite" and spec.dtype != "float32":
        raise ExportError(
            f"TFLite runs float32 only and this model is {spec.dtype}: export 'savedmodel' instead, "
            "or export a float32 copy: rnncore.build(spec.replace(dtype='float32'), "
            "backend='tensorflow', weights=rnncore.get_weights(model))"
        )
    if fmt == "tflite" and spec.head is not None and spec.head.crf:
        raise ExportError(
            "TFLite export of a CRF tagger is not supported: its Viterbi decoding needs TensorFlow "
            "ops (Flex) that TFLite runtimes often lack. Export 'savedmodel' (Viterbi inside, output "
            "'tags') or 'torchscript'"
        )
    target = Path(path)
    folder = fmt == "savedmodel"
    _check_replaceable(target, folder)  # before the slow part
    if folder:
        _write_atomically(target, lambda tmp: _write_savedmodel(model, spec, tmp))
    else:
        data = _convert_tflite(spec, get_weights(model))
        _write_atomically(target, lambda tmp: tmp.write_bytes(data))


def run_exported(path: str | Path, fmt: str, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Run an exported artifact with its own runtime on a right-padded batch; numpy out.

    SavedModel: `tf.saved_model.load` and the `serving_default` signature. TFLite: the LiteRT
    interpreter (`tf.lite.Interpreter` when ai-edge-litert is not installed), its inputs
    resized to this batch's shape. Integer dtypes are cast to the signature's.
    """
    x, lens = _check_batch(np.asarray(inputs), np.asarray(lengths))
    if fmt == "savedmodel":
        return _run_savedmodel(Path(path), x, lens)
    if fmt == "tflite":
        return _run_tflite(Path(path), x, lens)
    raise ExportError(f"unknown export format {fmt!r}; the Keras backend runs {', '.join(EXPORT_FORMATS)}")


# ---- atomic writes ---------------------------------------------------------------------


def _write_atomically(target: Path, write: Callable[[Path], Any]) -> None:
    """`write(tmp)` a file or folder next to `target`, then move it into place."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    # same folder as the target, so the final os.replace is a rename on one file system
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    try:
        staged = work / target.name
        write(staged)
        if target.is_dir():  # an earlier SavedModel (checked by _check_replaceable)
            _swap_folder(staged, target, work)
        else:
            os.replace(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _swap_folder(staged: Path, target: Path, work: Path) -> None:
    # os.replace cannot move a folder onto a non-empty one: move the old one aside first
    # (into the work folder, deleted afterwards) and put it back if the move in fails.
    old = work / "previous"
    os.replace(target, old)
    try:
        os.replace(staged, target)
    except OSError:
        os.replace(old, target)
        raise


def _check_replaceable(target: Path, folder: bool) -> None:
    # Never delete something that is not an earlier export of the same kind (a typo'd path
    # could otherwise be a home folder).
    if not target.exists() and not target.is_symlink():
        return
    if folder and not (target.is_dir() and (target / "saved_model.pb").is_file()):
        raise ExportError(f"{target} exists and is not a SavedModel folder; refusing to replace it")
    if not folder and not target.is_file():
        raise ExportError(f"{target} exists and is not a file; refusing to replace it")


# ---- SavedModel ------------------------------------------------------------------------


def _write_savedmodel(model: Any, spec: ModelSpec, folder: Path) -> None:
    # Keras' ExportArchive saves the variables and this one traced function; tracking the
    # model itself with tf.saved_model.save would also trace and store every layer's call.
    crf = crf_layer(model)

    def serve(inputs: Any, lengths: Any) -> dict[str, Any]:
        outputs = model([inputs, lengths], training=False)
        if crf is None:
            return {OUTPUT_NAME: outputs}
        return {
            OUTPUT_NAME: outputs,
            TAGS_NAME: viterbi(outputs, lengths, crf.transitions, crf.start, crf.end),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve, input_signature=input_signature(spec, INPUT_NAMES))
    archive.write_out(str(folder), verbose=False)


def decode_exported(path: str | Path, fmt: str, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A CRF tagger's tag paths (B, T) int64 from its SavedModel (the `tags` output)."""
    if fmt != "savedmodel":
        raise ExportError(f"{fmt} files of rnncore hold no Viterbi decoder; SavedModel folders do")
    x, lens = _check_batch(np.asarray(inputs), np.asarray(lengths))
    return np.asarray(_serve_savedmodel(Path(path), x, lens)[TAGS_NAME].numpy())


def _run_savedmodel(path: Path, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return np.asarray(_serve_savedmodel(path, x, lengths)[OUTPUT_NAME].numpy())


def _serve_savedmodel(path: Path, x: np.ndarray, lengths: np.ndarray) -> dict[str, Any]:
    graph = path / "saved_model.pb"
    if not graph.is_file():
        raise ExportError(f"{path} is not a SavedModel folder (no saved_model.pb)")
    stat = graph.stat()
    _, serve = _load_serving(str(path.resolve()), (stat.st_ino, stat.st_mtime_ns))
    specs = serve.structured_input_signature[1]
    feeds = {
        name: tf.convert_to_tensor(value.astype(specs[name].dtype.as_numpy_dtype))
        for name, value in zip(INPUT_NAMES, (x, lengths), strict=True)
    }
    return dict(serve(**feeds))


@functools.lru_cache(maxsize=2)
def _load_serving(path: str, stamp: tuple[int, int]) -> tuple[Any, Any]:
    """(loaded object, its serving signature); `stamp` is (inode, mtime) of saved_model.pb.

    Cached: loading and first-calling a SavedModel costs seconds, and checks run one several
    times; the stamp changes when an export replaces the folder. The loaded object is kept
    with the signature because the signature alone does not keep the variables alive.
    """
    loaded = tf.saved_model.load(path)
    return loaded, loaded.signatures[SIGNATURE]


# ---- TFLite: the same function as a plain TF graph of builtin ops -----------------------


def _convert_tflite(spec: ModelSpec, weights: Weights) -> bytes:
    graph = _PlainGraph(spec, weights)
    concrete = graph.serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], graph)
    converter.target_spec.supported_ops = list(TFLITE_OPS)
    data: bytes = converter.convert()
    return data


class _PlainGraph(tf.Module):
    """The model's function in plain TF ops on constant weights (see the module docstring)."""

    def __init__(self, spec: ModelSpec, weights: Mapping[str, np.ndarray]):
        super().__init__()
        self.spec = spec
        # constants, not variables: the converter would freeze variables anyway
        self.w = {name: tf.constant(value, dtype=spec.dtype) for name, value in weights.items()}
        signature = input_signature(spec, INPUT_NAMES)
        self.serve = tf.function(self._serve, input_signature=signature, autograph=False)

    def _serve(self, inputs: Any, lengths: Any) -> dict[str, Any]:
        spec = self.spec
        seq = tf.gather(self.w["embedding.weight"], inputs) if spec.input.kind == "tokens" else inputs
        keep = tf.expand_dims(tf.sequence_mask(lengths, tf.shape(seq)[1]), -1)  # (B, T, 1)
        for layer in range(spec.encoder.num_layers):
            seq = self._encoder_layer(layer, seq, lengths, keep)
        out = seq if spec.per_step_output else self._pool(seq, lengths, keep)
        if spec.head is not None:
            out = self._head(out)
            if spec.per_step_output:
                out = _zero_padded(out, keep)
        return {OUTPUT_NAME: out}

    def _encoder_layer(self, layer: int, seq: Any, lengths: Any, keep: Any) -> Any:
        halves = [self._direction(layer_prefix(layer, "fwd"), seq)]
        if self.spec.encoder.bidirectional:
            # backward = forward over each row reversed within its length, reversed back
            reverse = _reverse_within(seq, lengths)
            halves.append(_reverse_within(self._direction(layer_prefix(layer, "bwd"), reverse), lengths))
        out = tf.concat(halves, axis=-1) if len(halves) > 1 else halves[0]
        if self.spec.residual_layers[layer]:
            out = out + seq
        return _zero_padded(out, keep)

    def _direction(self, prefix: str, seq: Any) -> Any:
        """One direction over the whole padded sequence `(B, T, I)` -> `(B, T, H)`."""
        cell = self.spec.encoder.cell
        w_ih = tf.transpose(self.w[f"{prefix}.W_ih"])
        w_hh = tf.transpose(self.w[f"{prefix}.W_hh"])
        b_in = self.w[f"{prefix}.b_ih" if cell == "gru" else f"{prefix}.b"]
        # time-major input projection of every step at once: one matmul instead of T
        projected = tf.einsum("bti,ig->tbg", seq, w_ih) + b_in
        b_hh = self.w[f"{prefix}.b_hh"] if cell == "gru" else None
        step = _step_function(cell, self.spec.encoder.nonlinearity, w_hh, b_hh)
        return _recur(step, projected, self.spec.encoder.hidden_size, lstm=cell == "lstm")

    def _pool(self, seq: Any, lengths: Any, keep: Any) -> Any:
        mode = self.spec.pooling
        if mode == "last":
            last = tf.gather(seq, lengths - 1, axis=1, batch_dims=1)
            if not self.spec.encoder.bidirectional:
                return last
            # the backward half has read the whole row at step 0
            hidden = self.spec.encoder.hidden_size
            return tf.concat([last[:, :hidden], seq[:, 0, hidden:]], axis=-1)
        if mode == "mean":  # padded steps are already zero
            return tf.reduce_sum(seq, axis=1) / tf.expand_dims(tf.cast(lengths, seq.dtype), -1)
        if mode == "max":
            return tf.reduce_max(tf.where(keep, seq, tf.constant(-np.inf, seq.dtype)), axis=1)
        scores = tf.reduce_sum(seq * self.w["pooling.attention.weight"], axis=-1, keepdims=True)
        alpha = tf.nn.softmax(tf.where(keep, scores, tf.constant(-np.inf, seq.dtype)), axis=1)
        return tf.reduce_sum(alpha * seq, axis=1)

    def _head(self, features: Any) -> Any:
        names = head_layer_names(self.spec)
        for i, name in enumerate(names):
            kernel = tf.transpose(self.w[f"{name}.weight"])
            features = tf.einsum("...i,io->...o", features, kernel) + self.w[f"{name}.bias"]
            if i < len(names) - 1:
                features = self._activate(features)
        return features

    def _activate(self, x: Any) -> Any:
        head = self.spec.head
        assert head is not None
        if head.activation == "relu":
            return tf.nn.relu(x)
        if head.activation == "leaky_relu":
            return tf.where(x >= 0, x, head.negative_slope * x)
        if head.activation == "tanh":
            return tf.tanh(x)
        # the exact erf form; the converter fuses this pattern into the builtin GELU op
        return 0.5 * x * (1.0 + tf.math.erf(x * _SQRT_HALF))


def _zero_padded(seq: Any, keep: Any) -> Any:
    # `where`, not a multiply: garbage (inf/nan) computed at padded steps must not leak
    return tf.where(keep, seq, tf.zeros_like(seq))


def _reverse_within(seq: Any, lengths: Any) -> Any:
    return tf.reverse_sequence(seq, lengths, seq_axis=1, batch_axis=0)


# (projected input of one step, state) -> new state; state[0] is h, LSTM adds c
Step = Callable[[Any, list[Any]], list[Any]]


def _step_function(cell: str, nonlinearity: str, w_hh: Any, b_hh: Any) -> Step:
    def lstm(zx: Any, state: list[Any]) -> list[Any]:
        h, c = state
        i, f, g, o = tf.split(zx + tf.matmul(h, w_hh), 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return [tf.sigmoid(o) * tf.tanh(c), c]

    def gru(zx: Any, state: list[Any]) -> list[Any]:
        (h,) = state
        # reset-after form: the reset gate scales the recurrent part including its bias
        x_r, x_z, x_n = tf.split(zx, 3, axis=-1)
        h_r, h_z, h_n = tf.split(tf.matmul(h, w_hh) + b_hh, 3, axis=-1)
        r, z = tf.sigmoid(x_r + h_r), tf.sigmoid(x_z + h_z)
        n = tf.tanh(x_n + r * h_n)
        return [(1.0 - z) * n + z * h]

    def rnn(zx: Any, state: list[Any]) -> list[Any]:
        z = zx + tf.matmul(state[0], w_hh)
        return [tf.tanh(z) if nonlinearity == "tanh" else tf.nn.relu(z)]

    return {"lstm": lstm, "gru": gru, "rnn": rnn}[cell]


def _recur(step: Step, projected: Any, hidden: int, lstm: bool) -> Any:
    """Run `step` over time-major `(T, B, G*H)` from a zero state -> batch-major `(B, T, H)`.

    Outputs accumulate by concatenation in a loop variable: a TensorArray would become a
    TensorList with a dynamic element shape, which TFLite cannot lower to builtin ops.
    """
    steps, batch = tf.shape(projected)[0], tf.shape(projected)[1]
    zero = tf.zeros(tf.stack([batch, hidden]), projected.dtype)
    state = [zero, zero] if lstm else [zero]
    outputs = tf.zeros(tf.stack([0, batch, hidden]), projected.dtype)

    def body(t: Any, outputs: Any, state: list[Any]) -> tuple[Any, Any, list[Any]]:
        state = step(projected[t], state)
        return t + 1, tf.concat([outputs, tf.expand_dims(state[0], 0)], axis=0), state

    invariants = (
        tf.TensorShape([]),
        tf.TensorShape([None, None, hidden]),
        [tf.TensorShape([None, hidden])] * len(state),
    )
    _, outputs, _ = tf.while_loop(
        lambda t, *_: t < steps, body, (tf.constant(0), outputs, state), shape_invariants=invariants
    )
    return tf.transpose(outputs, [1, 0, 2])


# ---- running a TFLite file -------------------------------------------------------------


def _interpreter(path: Path) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # LiteRT is the supported runtime; TF's own copy is deprecated
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path))


def _run_tflite(path: Path, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    interpreter = _interpreter(path)
    inputs, output = _signature_tensors(interpreter)
    feeds = dict(zip(INPUT_NAMES, (x, lengths), strict=True))
    # the file was written for any (B, T): give it this batch's shapes before allocating
    for name, value in feeds.items():
        interpreter.resize_tensor_input(inputs[name]["index"], value.shape)
    interpreter.allocate_tensors()
    for name, value in feeds.items():
        interpreter.set_tensor(inputs[name]["index"], value.astype(inputs[name]["dtype"]))
    interpreter.invoke()
    return np.array(interpreter.get_tensor(output["index"]))


def _signature_tensors(interpreter: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Details of the serving signature's named inputs and of its output."""
    runner = interpreter.get_signature_runner(SIGNATURE)
    inputs, output = runner.get_input_details(), runner.get_output_details()[OUTPUT_NAME]
    # the runner holds views into the interpreter, which forbid resizing while they live
    del runner
    return inputs, output


def _check_batch(x: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Checked here because a TFLite kernel given a length outside 1..T reads out of bounds.
    if x.ndim not in (2, 3) or 0 in x.shape[:2]:
        raise InputError(f"inputs must be (B, T) ids or (B, T, F) features; got shape {x.shape}")
    batch, steps = x.shape[:2]
    if lengths.shape != (batch,) or not np.issubdtype(lengths.dtype, np.integer):
        raise InputError(f"lengths must be integers of shape ({batch},); got {lengths.dtype} {lengths.shape}")
    if lengths.min() < 1 or lengths.max() > steps:
        raise InputError(f"every length must be in 1..{steps}; got {lengths.tolist()}")
    return x, lengths.astype(np.int32)
