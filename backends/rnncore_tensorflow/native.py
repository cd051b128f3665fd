"""Import a hand-written Keras 3 model (Sequential or functional) as a spec and canonical weights.

The model must be one chain of layers from its one input to its one output::

    Input -> [Embedding] -> (Dropout | LSTM | GRU | SimpleRNN | RNN(cell) | Bidirectional(...))+
          -> [GlobalAveragePooling1D | GlobalMaxPooling1D]
          -> (Dropout | [BatchNormalization] Dense [-> Activation | LeakyReLU])*

`RNN(LSTMCell | GRUCell | SimpleRNNCell)` runs the cell of the layer of that kind. An
inference-mode `BatchNormalization` over the last axis right before a Dense is an affine map
per feature, folded into that Dense's weights. An unbuilt Sequential that starts with an
Embedding is built as its first call would build it. `rnncore.native.verify` then runs the
model and the import on a padded probe batch and refuses an import that differs.

Anything else raises `UnsupportedNativeModel(layer, reason)`: rnncore refuses rather than
approximates. The import is exact for inference on right-padded batches; how each Keras
behaviour maps (checked numerically in tests/test_native_keras.py):

- Input: an `Embedding` first means token ids. `mask_zero=True` masks id 0, which is spec
  `padding_idx` 0 (rows valid up to their last non-zero id; a 0 inside a row would be a hole
  in Keras' mask, so batches must be right padded). `mask_zero=False` runs Keras over every
  step, pads included: `padding_idx` None, every step valid. Otherwise the input is features
  `(B, T, F)`. `Masking` is refused: it masks a step when its *values* equal `mask_value`, so
  a real step can become a hole; rnncore takes lengths instead.
- The embedding row at `padding_idx` is zeroed. Keras keeps (and never trains) that row, but
  with `mask_zero` the ids that select it are masked, so the row never reaches an output:
  zeroing is exact, and gives the canonical layout its documented zero padding row.
- Pooling: a last recurrent layer with `return_sequences=False` is pooling `last` (Keras
  carries the state over masked steps, so the forward output is the one at step L-1, and a
  Bidirectional backward layer ends on step 0). `GlobalAveragePooling1D` honours the mask:
  `mean`. `GlobalMaxPooling1D` ignores the mask; it is `max` only where that is exact: no
  mask, or a unidirectional last layer, which repeats its step L-1 output over the padding
  (Bidirectional zeroes padded outputs, so the max would see those zeros: refused).
  `return_sequences=True` into Dense layers is per-step output (pooling `none`, task tagging).
- Head: every Dense but the last is a hidden layer, all with the same activation (relu, tanh,
  gelu exact, leaky_relu; `Dense(activation="leaky_relu")` has Keras' slope 0.2, a
  `LeakyReLU` layer its own). rnncore outputs logits: a final softmax is task classification,
  sigmoid multilabel, linear the `task` option. Compare with the Keras model by applying the
  activation to rnncore's logits.
- `use_bias=False` imports zero biases (exact). `unroll`, `use_cudnn`, initializers,
  regularizers, constraints and `unit_forget_bias` do not change the forward pass.
- Dropout is the identity at inference, so it never changes what the import computes. For
  training, the spec has one rate per stage: `encoder.dropout` (after every recurrent layer)
  is the largest rate among Dropout/SpatialDropout1D layers before pooling and the recurrent
  layers' own input `dropout=`; `head.dropout` (after every hidden Dense) the largest rate of
  the Dropout layers after pooling. Placement and masks differ from Keras; no two frameworks
  draw the same dropout masks anyway. `recurrent_dropout` acts inside the recurrence, which
  rnncore does not have: refused.
- dtype: every layer must compute in its variables' dtype, float32 or float64 (a layer with
  another dtype would round the stream through it).

Keras' own float64 leaky_relu and gelu go through float32 constants on TensorFlow, so a
float64 Keras model with those head activations is off the exact function (and the import)
by ~1e-9, above the float64 output tolerance; relu and tanh agree to ~1e-16.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from rnncore.native import NativeReading, NativeRun, UnsupportedNativeModel, fold_normalization
from rnncore.spec import DTYPES, TASKS, EncoderSpec, HeadSpec, InputSpec, ModelSpec
from rnncore.weights import Weights, canonical_shapes, check_weights, head_layer_names, iter_layers

from . import convert
from .model import get_weights, owns, spec_of

_CELLS = {keras.layers.LSTM: "lstm", keras.layers.GRU: "gru", keras.layers.SimpleRNN: "rnn"}
# keras.layers.RNN(cell) runs the same cell as the layer of that kind
_CELL_TYPES = {keras.layers.LSTMCell: "lstm", keras.layers.GRUCell: "gru", keras.layers.SimpleRNNCell: "rnn"}


def _cell_kind(layer: Any) -> str | None:
    """ "lstm", "gru" or "rnn" for a Keras recurrent layer of that cell, else None."""
    if type(layer) in _CELLS:
        return _CELLS[type(layer)]
    if type(layer) is keras.layers.RNN:
        return _CELL_TYPES.get(type(layer.cell))
    return None


_DROPOUTS = (keras.layers.Dropout, keras.layers.SpatialDropout1D)
# Keras activation functions by identity (a loaded model gets the same function objects).
_ACTIVATIONS = {
    keras.activations.linear: "linear",
    keras.activations.relu: "relu",
    keras.activations.tanh: "tanh",
    keras.activations.gelu: "gelu",  # approximate=False by default: the exact erf form
    keras.activations.leaky_relu: "leaky_relu",
    keras.activations.sigmoid: "sigmoid",
    keras.activations.softmax: "softmax",
}
_LEAKY_RELU_DEFAULT_SLOPE = 0.2  # keras.activations.leaky_relu's negative_slope
_OUTPUT_TASKS = {"softmax": "classification", "sigmoid": "multilabel"}


def owns_native(model: Any) -> bool:
    """True for any Keras model (whether or not rnncore can import it)."""
    return isinstance(model, keras.Model)


def from_native(model: Any, *, task: str | None = None) -> tuple[ModelSpec, Weights]:
    """`rnncore.from_native` for Keras models: read (see `read_native`), then verified.

    Example:
        >>> spec, weights = from_native(keras.saving.load_model("imdb_bilstm.keras"))
        >>> torch_model = rnncore.build(spec, backend="torch", weights=weights)
    """
    from rnncore.native import from_native as verified_import

    return verified_import(model, task=task)


def read_native(model: Any, *, task: str | None = None) -> NativeReading:
    """The spec and canonical weights of a hand-written Keras 3 model, and how to run it.

    Args:
        model: a `keras.Sequential` or functional `keras.Model`, e.g. one loaded with
            `keras.saving.load_model`. A model built by rnncore returns its own spec.
        task: the head's task when the output Dense is linear: classification (default),
            multilabel or regression. Softmax/sigmoid outputs and per-step outputs fix it.
    Returns:
        The reading; its `run.activation` ("linear", "softmax" or "sigmoid") is what the
        model applies to rnncore's logits (`rnncore port` compares after applying it).
    Raises:
        UnsupportedNativeModel: a layer or setting with no exact rnncore equivalent.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    name = str(getattr(model, "name", type(model).__name__))
    if owns(model):
        from . import predict  # here: the package imports this module

        run = NativeRun(lambda inputs, lengths: predict(model, inputs, lengths))
        return NativeReading(name, spec_of(model), get_weights(model), run)
    graph = _chain(model)
    layers = _Layers(graph.layers)
    input_spec, embedding = _read_input(layers, graph.source)
    encoder, encoder_rates = _read_encoder(layers)
    pooling, more_rates = _read_pooling(layers, encoder, masked=input_spec.padding_idx is not None)
    denses, head_rates = _read_head(layers, per_step=pooling == "none")
    _check_extra_inputs(graph, input_spec)
    spec = ModelSpec(
        input=input_spec,
        encoder=_encoder_spec(encoder, encoder_rates + more_rates),
        pooling=pooling,
        head=_head_spec(denses, head_rates, pooling == "none", task),
        dtype=_dtype(graph, input_spec),
    )
    run = NativeRun(
        lambda inputs, lengths: _call(model, inputs),  # Keras masks by itself (mask_zero)
        activation=denses[-1].activation if denses else "linear",
        honours_padding=input_spec.padding_idx is not None,
    )
    return NativeReading(name, spec, _weights(spec, embedding, encoder, denses), run)


def _call(model: Any, inputs: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(inputs, training=False)))


# ---- the chain of layers ---------------------------------------------------------------


def _refuse(layer: Any, reason: str) -> UnsupportedNativeModel:
    """The error naming `layer` (a Keras layer, model or tensor, or a name)."""
    name = layer if isinstance(layer, str) else getattr(layer, "name", type(layer).__name__)
    return UnsupportedNativeModel(str(name), reason)


@dataclass(frozen=True)
class _Graph:
    source: Any  # the model's one input tensor
    layers: list[Any]  # input to output, InputLayer left out
    extra_inputs: list[tuple[Any, Any]]  # (layer, tensor) for tensors besides the main one


def _chain(model: Any) -> _Graph:
    """The model as one chain of layers from its one input to its one output."""
    inputs, outputs = _model_io(model)
    if len(inputs) != 1 or len(outputs) != 1:
        raise _refuse(
            model,
            f"has {len(inputs)} inputs and {len(outputs)} outputs; rnncore reads models with one "
            "sequence input and one output",
        )
    source, tensor = inputs[0], outputs[0]
    layers, extra = [], []
    while tensor is not source:
        layer, node_index, _ = tensor._keras_history
        tensor, others = _main_input(layer, layer._inbound_nodes[node_index])
        layers.append(layer)
        extra += [(layer, other) for other in others]
    return _Graph(source, layers[::-1], extra[::-1])


def _model_io(model: Any) -> tuple[list[Any], list[Any]]:
    if isinstance(model, keras.Sequential) and not model.built:
        _build_sequential(model)
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):  # an unbuilt Sequential has no inputs yet
        inputs = outputs = None
    if inputs is None or outputs is None:
        raise _refuse(
            model,
            "has no layer graph: rnncore reads built Sequential and functional models (start a "
            "Sequential with keras.Input(...)); a subclassed keras.Model is only known by running it",
        )
    return list(inputs), list(outputs)


def _build_sequential(model: Any) -> None:
    """Build an unbuilt Sequential the way its first call would: from its embedding's input.

    Layers given `input_shape=` get a Keras Input at construction, so the one left to build
    here is an Embedding-first model: its input is (batch, steps) ids.
    """
    first = model.layers[0] if model.layers else None
    if type(first) is not keras.layers.Embedding:
        raise _refuse(
            model,
            "is an unbuilt Sequential whose first layer declares no input; start it with "
            "keras.Input(shape=(None, features)) (or call it once on a batch)",
        )
    model.build((None, None))


def _main_input(layer: Any, node: Any) -> tuple[Any, list[Any]]:
    """The one tensor `layer` was called on, and the other tensors of the call (masks, states).

    Keras records the mask it passes along by itself as a `mask=` argument of the call; those
    are checked once the input is known (`_check_extra_inputs`).
    """
    args = node.arguments.args
    main = args[0] if len(args) == 1 else None
    if not isinstance(main, keras.KerasTensor):
        raise _refuse(
            layer,
            f"{type(layer).__name__} is called on several tensors; rnncore reads a single chain of layers",
        )
    return main, [t for t in node.arguments.keras_tensors if t is not main]


def _is_padding_mask(tensor: Any, source: Any) -> bool:
    """`ops.not_equal(input, 0)`: Embedding(mask_zero=True)'s mask, as the model graph records it.

    Compared by value, not identity: a model loaded from a `.keras` file records the same
    mask computed once more, as a second tensor.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None or type(history.operation).__name__ != "NotEqual":
        return False
    args = history.operation._inbound_nodes[history.node_index].arguments.args
    return len(args) == 2 and args[0] is source and isinstance(args[1], int) and args[1] == 0


class _Layers:
    """The chain of layers, read front to back."""

    def __init__(self, layers: list[Any]):
        self._layers = layers
        self._next = 0

    def peek(self) -> Any:
        """The next layer, None past the end."""
        return self._layers[self._next] if self._next < len(self._layers) else None

    def take(self) -> Any:
        layer = self._layers[self._next]
        self._next += 1
        return layer

    def previous(self) -> Any:
        """The layer last taken, or the name "input" before the first."""
        return self._layers[self._next - 1] if self._next else "input"

    def dropout_rates(self) -> list[float]:
        """Consume consecutive Dropout layers; their rates (training only)."""
        rates = []
        while type(self.peek()) in _DROPOUTS:
            rates.append(float(self.take().rate))
        return rates


def _unknown(layer: Any, expected: str) -> UnsupportedNativeModel:
    kind = type(layer).__name__
    if isinstance(layer, keras.Model):
        return _refuse(
            layer, f"a nested model ({kind}) is not read; build one flat model, expected {expected}"
        )
    if isinstance(layer, keras.layers.Masking):
        return _refuse(
            layer,
            "Masking masks a step when all its values equal mask_value, so a real step can become "
            "a hole in the mask; rnncore takes lengths instead (remove Masking, pass lengths)",
        )
    return _refuse(layer, f"{kind} has no rnncore equivalent here; expected {expected}")


# ---- input ---------------------------------------------------------------------------


def _read_input(layers: _Layers, source: Any) -> tuple[InputSpec, Any | None]:
    first = layers.peek()
    rank = len(source.shape)
    if type(first) is keras.layers.TextVectorization:
        raise _refuse(
            first,
            "a TextVectorization input: rnncore imports models from token ids; build the model from the "
            "layer after it (keras.Model(ids, outputs)) and tokenize with rnncore's tokenizer. "
            "Converting TextVectorization itself is not supported yet",
        )
    if type(first) is keras.layers.Embedding:
        embedding = layers.take()
        _check_not_quantized(embedding)
        if rank != 2:
            raise _refuse(embedding, f"reads a rank-{rank} input; rnncore embeds (batch, steps) token ids")
        # mask_zero: id 0 is padding; without it Keras runs over every step (no padding id)
        spec = InputSpec(
            kind="tokens",
            vocab_size=int(embedding.input_dim),
            embedding_dim=int(embedding.output_dim),
            padding_idx=0 if embedding.mask_zero else None,
        )
        return spec, embedding
    if rank != 3 or source.shape[-1] is None or "float" not in str(source.dtype):
        raise _refuse(
            first if first is not None else source,
            f"the input is {source.dtype} of shape {source.shape}: rnncore reads token ids into an "
            "Embedding, or float features of shape (batch, steps, features) with features known",
        )
    return InputSpec(kind="features", feature_dim=int(source.shape[-1])), None


def _check_extra_inputs(graph: _Graph, input_spec: InputSpec) -> None:
    # Keras passes Embedding(mask_zero=True)'s mask along by itself; any other tensor (a mask
    # from elsewhere, an initial state) was given explicitly and has no place in the spec.
    for layer, tensor in graph.extra_inputs:
        if input_spec.padding_idx is None or not _is_padding_mask(tensor, graph.source):
            raise _refuse(
                layer,
                "is called with an explicit mask or state besides its input; rnncore reads a single "
                "chain of layers, masked only by Embedding(mask_zero=True)",
            )


def _check_not_quantized(layer: Any) -> None:
    mode = getattr(layer.dtype_policy, "quantization_mode", None)
    if mode is not None:
        raise _refuse(layer, f"is quantized ({mode}); rnncore weights are float32 or float64")


# ---- encoder -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Recurrent:
    """One encoder layer: a Keras RNN layer, or the two of a Bidirectional wrapper."""

    layer: Any
    directions: tuple[Any, ...]  # the Keras RNN layers, forward first
    cell: str
    units: int
    nonlinearity: str

    @property
    def return_sequences(self) -> bool:
        return bool(self.directions[0].return_sequences)


def _is_recurrent(layer: Any) -> bool:
    return _cell_kind(layer) is not None or type(layer) in (keras.layers.Bidirectional, keras.layers.RNN)


def _read_encoder(layers: _Layers) -> tuple[list[_Recurrent], list[float]]:
    """Recurrent layers (and the Dropout layers around them) up to pooling."""
    encoder: list[_Recurrent] = []
    rates: list[float] = []
    while True:
        rates += layers.dropout_rates()
        if not _is_recurrent(layers.peek()):
            break
        if encoder and not encoder[-1].return_sequences:
            raise _refuse(encoder[-1].layer, "returns one vector per row but another recurrent layer follows")
        layer = _read_recurrent(layers.take())
        if encoder:
            _check_same_as(layer, encoder[0])
        encoder.append(layer)
        rates += [float(rnn.cell.dropout) for rnn in layer.directions]
    if not encoder:
        found = layers.peek()
        if found is None:
            raise _refuse(layers.previous(), "no recurrent layer follows; rnncore models have one at least")
        raise _unknown(found, "an LSTM, GRU, SimpleRNN or Bidirectional layer")
    return encoder, rates


def _read_recurrent(layer: Any) -> _Recurrent:
    if type(layer) is not keras.layers.Bidirectional:
        if layer.go_backwards:
            raise _refuse(layer, "go_backwards=True outside Bidirectional reads rows from their padded end")
        cell, units, nonlinearity = _check_rnn(layer, layer.name)
        return _Recurrent(layer, (layer,), cell, units, nonlinearity)
    if layer.merge_mode != "concat":
        raise _refuse(layer, f"merge_mode={layer.merge_mode!r}; rnncore concatenates the directions")
    forward, backward = layer.forward_layer, layer.backward_layer
    if forward.go_backwards:
        raise _refuse(layer, "its forward layer has go_backwards=True, so the halves are swapped")
    parts = [_check_rnn(rnn, f"{layer.name} ({rnn.name})") for rnn in (forward, backward)]
    if parts[0] != parts[1]:
        raise _refuse(layer, f"the directions differ ({parts[0]} vs {parts[1]}); rnncore uses one cell")
    return _Recurrent(layer, (forward, backward), *parts[0])


def _check_rnn(rnn: Any, name: str) -> tuple[str, int, str]:
    """(cell, units, nonlinearity) of one Keras RNN layer, or the reason it has no equivalent."""
    cell = _cell_kind(rnn)
    if cell is None:
        inner = f" of {type(rnn.cell).__name__}" if type(rnn) is keras.layers.RNN else ""
        raise UnsupportedNativeModel(
            name, f"{type(rnn).__name__}{inner} is not an LSTM, GRU or SimpleRNN (layer or cell)"
        )
    settings = rnn.cell
    refusals = {
        "stateful=True carries state from batch to batch": rnn.stateful,
        "return_state=True gives several outputs": rnn.return_state,
        f"recurrent_dropout={settings.recurrent_dropout} drops the recurrent state in training; "
        "rnncore has no recurrent dropout": settings.recurrent_dropout > 0,
        "reset_after=False is the other GRU form; rnncore's GRU is reset_after=True": (
            cell == "gru" and not settings.reset_after
        ),
    }
    for reason, refused in refusals.items():
        if refused:
            raise UnsupportedNativeModel(name, reason)
    activation = _ACTIVATIONS.get(settings.activation, "")
    allowed = ("tanh", "relu") if cell == "rnn" else ("tanh",)
    if activation not in allowed:
        needs = " or ".join(allowed)
        raise UnsupportedNativeModel(
            name, f"activation {_describe(settings.activation)}; {type(rnn).__name__} needs {needs}"
        )
    if cell != "rnn" and settings.recurrent_activation is not keras.activations.sigmoid:
        got = _describe(settings.recurrent_activation)
        raise UnsupportedNativeModel(name, f"recurrent_activation {got}; rnncore gates use sigmoid")
    return cell, int(settings.units), activation


def _describe(function: Any) -> str:
    return repr(_ACTIVATIONS.get(function) or getattr(function, "__name__", function))


def _check_same_as(layer: _Recurrent, first: _Recurrent) -> None:
    mine = (layer.cell, layer.units, layer.nonlinearity, len(layer.directions))
    theirs = (first.cell, first.units, first.nonlinearity, len(first.directions))
    if mine != theirs:
        raise _refuse(
            layer.layer,
            f"(cell, units, activation, directions) = {mine} differs from the first recurrent layer's "
            f"{theirs}; rnncore stacks layers of one kind and width",
        )


def _encoder_spec(encoder: list[_Recurrent], rates: list[float]) -> EncoderSpec:
    first = encoder[0]
    return EncoderSpec(
        cell=first.cell,
        hidden_size=first.units,
        num_layers=len(encoder),
        bidirectional=len(first.directions) == 2,
        dropout=max(rates, default=0.0),
        nonlinearity=first.nonlinearity,
    )


# ---- pooling -------------------------------------------------------------------------


def _read_pooling(layers: _Layers, encoder: list[_Recurrent], masked: bool) -> tuple[str, list[float]]:
    """The spec pooling, and the rates of Dropout layers between the encoder and pooling."""
    last = encoder[-1]
    if not last.return_sequences:
        return "last", []
    rates = layers.dropout_rates()
    layer = layers.peek()
    if type(layer) in (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalMaxPooling1D):
        layers.take()
        if layer.data_format != "channels_last" or layer.keepdims:
            raise _refuse(layer, "needs data_format='channels_last' and keepdims=False")
        if type(layer) is keras.layers.GlobalAveragePooling1D:
            return "mean", rates  # Keras averages over unmasked steps only
        _check_max_is_exact(layer, last, masked)
        return "max", rates
    if layer is None or type(layer) in (keras.layers.Dense, keras.layers.TimeDistributed):
        return "none", rates
    raise _unknown(layer, "pooling (GlobalAveragePooling1D, GlobalMaxPooling1D) or a Dense layer")


def _check_max_is_exact(layer: Any, last: _Recurrent, masked: bool) -> None:
    # GlobalMaxPooling1D drops the mask and takes the max over padded steps too.
    zeroed = any(rnn.zero_output_for_mask for rnn in last.directions)
    if masked and zeroed:
        raise _refuse(
            layer,
            "GlobalMaxPooling1D ignores the mask, and the layer before it outputs zeros at padded "
            "steps (Bidirectional does), so Keras' max includes those zeros; rnncore's max looks at "
            "valid steps only. Use GlobalAveragePooling1D or a unidirectional last layer",
        )


# ---- head ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dense:
    """A Dense layer with its activation (its own, or that of the layer after it)."""

    layer: Any
    activation: str
    negative_slope: float = _LEAKY_RELU_DEFAULT_SLOPE
    norm: Any = None  # an inference-mode BatchNormalization just before it, folded into it


def _read_head(layers: _Layers, per_step: bool) -> tuple[list[_Dense], list[float]]:
    denses: list[_Dense] = []
    rates: list[float] = []
    norm = None  # a BatchNormalization waiting for the Dense it folds into
    while True:
        rates += layers.dropout_rates()
        layer = layers.peek()
        if layer is None:
            if norm is not None:
                raise _refuse(
                    norm, "BatchNormalization with no Dense after it; rnncore folds it into the next Dense"
                )
            return denses, rates
        if type(layer) is keras.layers.BatchNormalization:
            norm = _read_norm(layers.take(), norm)
            continue
        if type(layer) is keras.layers.TimeDistributed and per_step:
            layers.take()
            layer = layer.layer  # TimeDistributed(Dense) is Dense on every step
        elif type(layer) is keras.layers.Dense:
            layers.take()
        else:
            raise _unknown(layer, "a Dense or Dropout layer")
        if type(layer) is not keras.layers.Dense:
            raise _unknown(layer, "TimeDistributed(Dense)")
        denses.append(dataclasses.replace(_read_dense(layer, layers), norm=norm))
        norm = None


def _read_norm(layer: Any, pending: Any) -> Any:
    """A BatchNormalization that inference turns into a per-feature affine map, or the refusal."""
    rank = len(layer.input.shape)
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if pending is not None or [a % rank for a in axes] != [rank - 1]:
        raise _refuse(
            layer,
            "rnncore folds one BatchNormalization over the last axis into the Dense after it; "
            f"this one normalises axis {layer.axis}" + (" after another" if pending is not None else ""),
        )
    return layer


def _norm_affine(norm: Any) -> tuple[np.ndarray, np.ndarray]:
    """Inference-mode BatchNormalization as y = x * scale + shift (float64)."""

    def value(variable: Any) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(variable), np.float64)

    mean, var = value(norm.moving_mean), value(norm.moving_variance)
    gamma = value(norm.gamma) if norm.scale else np.ones_like(mean)
    beta = value(norm.beta) if norm.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + norm.epsilon)
    return scale, beta - mean * scale


def _read_dense(dense: Any, layers: _Layers) -> _Dense:
    _check_not_quantized(dense)
    name = _ACTIVATIONS.get(dense.activation)
    if name is None:
        raise _refuse(dense, f"activation {_describe(dense.activation)} has no rnncore equivalent")
    follower = layers.peek()
    if name != "linear" or type(follower) not in (keras.layers.Activation, keras.layers.LeakyReLU):
        return _Dense(dense, name)
    layers.take()
    if type(follower) is keras.layers.LeakyReLU:
        return _Dense(dense, "leaky_relu", float(follower.negative_slope))
    name = _ACTIVATIONS.get(follower.activation)
    if name is None:
        raise _refuse(follower, f"activation {_describe(follower.activation)} has no rnncore equivalent")
    return _Dense(dense, name)


def _head_spec(denses: list[_Dense], rates: list[float], per_step: bool, task: str | None) -> HeadSpec | None:
    if not denses:
        return None
    *hidden, output = denses
    for dense in hidden:
        if dense.activation not in ("relu", "tanh", "gelu", "leaky_relu"):
            raise _refuse(
                dense.layer,
                f"hidden Dense activation {dense.activation!r}; rnncore's hidden layers use relu, "
                "tanh, gelu or leaky_relu",
            )
        if (dense.activation, dense.negative_slope) != (hidden[0].activation, hidden[0].negative_slope):
            raise _refuse(
                dense.layer,
                f"activation {dense.activation!r} differs from the first hidden Dense's "
                f"{hidden[0].activation!r}; rnncore uses one activation for every hidden layer",
            )
    activation = hidden[0].activation if hidden else HeadSpec.activation
    slope = hidden[0].negative_slope if activation == "leaky_relu" else HeadSpec.negative_slope
    return HeadSpec(
        num_outputs=int(output.layer.units),
        task=_output_task(output, per_step, task),
        hidden=tuple(int(dense.layer.units) for dense in hidden),
        activation=activation,
        negative_slope=slope,
        dropout=max(rates, default=0.0),
    )


def _output_task(output: _Dense, per_step: bool, task: str | None) -> str:
    """The task the output Dense's activation stands for (rnncore outputs the logits before it)."""
    if output.activation not in ("linear", *_OUTPUT_TASKS):
        raise _refuse(
            output.layer,
            f"output activation {output.activation!r}; rnncore outputs logits, read from a linear, "
            "softmax or sigmoid output Dense",
        )
    implied = "tagging" if per_step else _OUTPUT_TASKS.get(output.activation)
    if implied is None:
        return task or "classification"
    if task not in (None, implied):
        raise _refuse(output.layer, f"the output implies task {implied!r}, but task={task!r} was asked for")
    return implied


# ---- dtype and weights ---------------------------------------------------------------


def _parts(layer: Any) -> list[Any]:
    """A layer and the layers/cells inside it, each with its own dtype policy."""
    if type(layer) is keras.layers.Bidirectional:
        return [layer, *_parts(layer.forward_layer), *_parts(layer.backward_layer)]
    if type(layer) is keras.layers.TimeDistributed:
        return [layer, layer.layer]
    if _cell_kind(layer) is not None:
        return [layer, layer.cell]
    return [layer]


def _dtype(graph: _Graph, input_spec: InputSpec) -> str:
    """The one float dtype every layer computes and stores in, or the layer that differs."""
    parts = [part for layer in graph.layers for part in _parts(layer)]
    with_weights = [part for part in parts if part.weights]
    dtype = str(with_weights[0].variable_dtype)
    if dtype not in DTYPES:
        raise _refuse(with_weights[0], f"stores {dtype} weights; rnncore models are float32 or float64")
    for part in parts:
        if part.compute_dtype != dtype or (part.weights and part.variable_dtype != dtype):
            stores = f" with {part.variable_dtype} weights" if part.weights else ""
            raise _refuse(
                part,
                f"computes in {part.compute_dtype}{stores} while the model's weights are {dtype}; "
                "Keras would round the values through it. Give every layer one dtype (e.g. "
                "keras.config.set_floatx before building)",
            )
    if input_spec.kind == "features" and str(graph.source.dtype) != dtype:
        raise _refuse(
            graph.layers[0],
            f"the Input is {graph.source.dtype} but the layers compute in {dtype}: Keras rounds the features "
            "through the Input's dtype first",
        )
    return dtype


def _weights(spec: ModelSpec, embedding: Any, encoder: list[_Recurrent], denses: list[_Dense]) -> Weights:
    found = list(_bindings(spec, embedding, encoder, denses))
    weights = convert.to_canonical(found, [keras.ops.convert_to_numpy(b.variable) for b in found])
    # use_bias=False leaves no bias variable: its canonical bias is zero (exact)
    for name, shape in canonical_shapes(spec).items():
        weights.setdefault(name, np.zeros(shape, dtype=spec.dtype))
    if spec.input.padding_idx is not None:
        weights["embedding.weight"][spec.input.padding_idx] = 0.0  # masked in Keras: exact
    for name, dense in zip(head_layer_names(spec), denses, strict=True):
        if dense.norm is not None:
            folded = fold_normalization(
                weights[f"{name}.weight"], weights[f"{name}.bias"], *_norm_affine(dense.norm)
            )
            weights[f"{name}.weight"], weights[f"{name}.bias"] = folded
    return check_weights(spec, weights)


def _bindings(
    spec: ModelSpec, embedding: Any, encoder: list[_Recurrent], denses: list[_Dense]
) -> Iterable[convert.Binding]:
    """The layout conversions of backends/rnncore_tensorflow/convert.py, on the user's layers."""
    found: list[convert.Binding] = []
    if embedding is not None:
        found.append(convert._same(embedding.embeddings, "embedding.weight"))
    for layer, direction, prefix in iter_layers(spec):
        rnn = encoder[layer].directions[0 if direction == "fwd" else 1]
        found.extend(convert._cell_bindings(spec.encoder.cell, rnn.cell, prefix))
    for name, dense in zip(head_layer_names(spec), denses, strict=True):
        found.append(convert._transposed(dense.layer.kernel, f"{name}.weight"))
        found.append(convert._same(dense.layer.bias, f"{name}.bias"))
    return [binding for binding in found if binding.variable is not None]
