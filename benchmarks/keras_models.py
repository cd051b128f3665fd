"""The hand-written Keras baseline, written as a Keras user would, for any Keras backend.

`Embedding(mask_zero=True)` on masked points (padding id 0), none on fixed ones; the recurrent
layers return sequences except the last, which returns its final state (`Bidirectional`
concatenates the forward state at the last valid step and the backward one at step 0, which is
rnncore's `last` pooling); a Dense layer gives the logits. Keras is imported here, when called,
so that the keras-on-torch worker can pick its backend first.
"""

from __future__ import annotations

from typing import Any

from .grid import NUM_CLASSES, Point


def build(point: Point, masked: bool) -> Any:
    import keras

    layers = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}
    ids = keras.Input(shape=(None,), dtype="int64")
    h = keras.layers.Embedding(point.vocab, point.embedding, mask_zero=masked)(ids)
    for layer in range(point.layers):
        rnn = layers[point.cell](point.hidden, return_sequences=layer < point.layers - 1)
        if point.bidirectional:
            rnn = keras.layers.Bidirectional(rnn)
        h = rnn(h)
    return keras.Model(ids, keras.layers.Dense(NUM_CLASSES)(h))
