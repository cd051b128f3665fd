"""Names of the Keras layers, shared by the model builder and the weight converter.

Weights are found by these names, walking the spec, never by the order of `model.weights`.
"""

from __future__ import annotations

INPUT_LENGTHS = "lengths"
STEP_MASK = "step_mask"
EMBEDDING = "embedding"
POOLING = "pooling"
OUTPUT_MASK = "head_output_zero_padding"
CRF = "crf"


def encoder(layer: int) -> str:
    """The recurrent layer (Bidirectional wrapper or plain RNN) of encoder layer `layer`."""
    return f"encoder_{layer}"


def encoder_part(layer: int, part: str) -> str:
    """A helper layer of encoder layer `layer`: dropout, residual, zero_padding."""
    return f"encoder_{layer}_{part}"


def head(canonical: str) -> str:
    """Dense layer for a canonical head prefix: `head.hidden.0` -> `head_hidden_0`."""
    return canonical.replace(".", "_")
