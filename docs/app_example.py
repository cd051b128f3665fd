"""From a raw string to a label with only the files `rnncore export` wrote.

    python app_example.py model.onnx "a quietly moving film"      # ONNX Runtime
    python app_example.py model.tflite "a quietly moving film"    # the LiteRT interpreter

Needs numpy, `tokenizers`, and the runtime of the format (onnxruntime or ai-edge-litert):
no rnncore, torch or TensorFlow. It prints one line per text: label, probability, text.
"""

import json
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


def encode(texts, app):
    """Right-padded int64 ids and lengths, as the model was trained to read them."""
    tokenizer = Tokenizer.from_file(str(app["folder"] / app["tokenizer"]))
    rows = [tokenizer.encode(text, add_special_tokens=False).ids[: app["max_len"]] for text in texts]
    rows = [row or [app["unknown_id"]] for row in rows]  # a text with no known token: one [UNK]
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    ids = np.full((len(rows), lengths.max()), app["padding_id"], dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids, lengths


def run_onnx(model, ids, lengths):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(["outputs"], {"inputs": ids, "lengths": lengths})[0]


def run_tflite(model, ids, lengths):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(model)).get_signature_runner("serving_default")
    return runner(inputs=ids, lengths=lengths)["outputs"]


def main(model, texts):
    model = Path(model)
    app = json.loads(Path(f"{model}.json").read_text(encoding="utf-8"))
    app["folder"] = model.parent
    ids, lengths = encode(texts, app)
    logits = {"onnx": run_onnx, "tflite": run_tflite}[app["model_format"]](model, ids, lengths)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    for text, p in zip(texts, probabilities, strict=True):
        print(f"{app['labels'][int(p.argmax())]}\t{p.max():.3f}\t{text}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
