"""Text classification on your own CSV: write a CSV, train on it, evaluate, predict, explain.

Run: python docs/tutorials/text_classification.py [WORK_FOLDER]   (default runs/tutorials/text)

Small settings so that it runs in CI (3,000 reviews, 2 epochs); for a
real model drop `--epochs` (early stopping decides) and train on all your rows.
"""

from __future__ import annotations

import csv
import json

from _common import rnncore, work_folder

from rnncore.data import load_bundled

work = work_folder("runs/tutorials/text")

# 1. Your data: a CSV with a header, one text and one label per row. Here we write one from the
#    bundled Rotten Tomatoes snippets; the column names are yours to choose.
reviews = load_bundled("rotten_tomatoes").subset(range(3000))
csv_path = work / "reviews.csv"
with csv_path.open("w", newline="", encoding="utf-8") as file:
    writer = csv.writer(file)
    writer.writerow(["review", "verdict"])
    writer.writerows(zip(reviews.texts, reviews.labels, strict=True))
print(f"wrote {csv_path}: {len(reviews.texts)} rows, labels {sorted(set(reviews.labels))}")

# 2. Train. The run folder gets checkpoints, history.json/.png and the final model bundle.
run = work / "run"
rnncore("train", "--task", "text-classification", "--data", csv_path, "--text-column", "review",
        "--label-column", "verdict", "--epochs", "2", "--max-len", "40", "--seed", "0", "--quiet",
        "--out", run)  # fmt: skip

# 3. Evaluate on the held-out test split (10% of the CSV), on the other framework.
rnncore("evaluate", run, "--backend", "tensorflow", "--json")

# 4. Predict new texts, and see which words drove one decision.
rnncore("predict", run, "a warm, funny and moving film", "a tedious, lifeless mess")
rnncore("explain", run, "a funny film, but far too long and dull", "--html", work / "why.html")

history = json.loads((run / "history.json").read_text(encoding="utf-8"))
print(f"\nepochs trained: {len(history['epochs'])}; files in {run}: "
      + ", ".join(sorted(p.name for p in run.iterdir())))  # fmt: skip
