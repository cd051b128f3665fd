"""Images as sequences: each image row is one time step (the classic "MNIST rows" LSTM).

Run: python docs/tutorials/mnist_rows.py [WORK_FOLDER]   (default runs/tutorials/mnist)

MNIST itself is not shipped, so this writes the bundled 8x8 digits (1,797 images, scikit-learn's
copy of the UCI set) as MNIST's IDX files and reads them back: point `read_mnist` at
train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz from the MNIST page and the rest is
unchanged (28 steps of 28 features). Small settings so that it runs in CI (20 epochs of 8x8 digits).
"""

from __future__ import annotations

import gzip

import numpy as np
from _common import rnncore, work_folder

import rnncore as rc
from rnncore.data import load_bundled, read_mnist


def write_idx(path, array: np.ndarray) -> None:
    """An IDX file as on the MNIST page: 0, 0, type 0x08 (uint8), dimensions, big-endian sizes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


work = work_folder("runs/tutorials/mnist")

# 1. MNIST-style files: uint8 images (N, rows, columns) and labels (N,).
digits = load_bundled("digits")
write_idx(work / "images-idx3-ubyte.gz", np.round(digits.x * 255))
write_idx(work / "labels-idx1-ubyte.gz", digits.y)

# 2. Read them as sequences: x (N, 8 steps, 8 features) in [0, 1]; save as the .npz that
#    `train --task sequence-classification` reads (x, y and optionally lengths).
data = read_mnist(work / "images-idx3-ubyte.gz", work / "labels-idx1-ubyte.gz")
np.savez(work / "digits.npz", x=data.x, y=data.y, lengths=data.lengths)
print(f"sequences: x {data.x.shape}, y {data.y.shape}, classes {sorted(set(data.y.tolist()))}")

# 3. Train an LSTM over the rows, and score it on the other framework.
run = work / "run"
rnncore("train", "--task", "sequence-classification", "--data", work / "digits.npz", "--epochs", "20",
        "--seed", "0", "--quiet", "--out", run)  # fmt: skip
rnncore("evaluate", run, "--backend", "tensorflow", "--json")

# 4. The trained model from Python: load the bundle on either backend and predict.
model = rc.load(run, backend="torch")
logits = rc.predict(model, data.x[:10], lengths=data.lengths[:10])
print(f"\nfirst 10 images: predicted {logits.argmax(axis=1).tolist()}, true {data.y[:10].tolist()}")
