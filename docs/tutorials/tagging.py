"""Part-of-speech tagging on a CoNLL file: write the file, train a BiLSTM tagger, evaluate it.

Run: python docs/tutorials/tagging.py [WORK_FOLDER]   (default runs/tutorials/tagging)

Small settings so that it runs in CI (4 epochs); the bundled Brown slice is 4,623 sentences.
"""

from __future__ import annotations

import json

from _common import rnncore, work_folder

from rnncore.data import load_bundled, read_conll

work = work_folder("runs/tutorials/tagging")

# 1. Your data: CoNLL columns, one token per line with its tag in the last column, a blank line
#    between sentences (CoNLL-2003 NER files read as they are). Here we write the bundled Brown
#    news slice in that form.
brown = load_bundled("brown_pos")
conll = work / "train.conll"
with conll.open("w", encoding="utf-8") as file:
    for words, tags in zip(brown.sentences, brown.tags, strict=True):
        file.writelines(f"{word}\t{tag}\n" for word, tag in zip(words, tags, strict=True))
        file.write("\n")
check = read_conll(conll)  # what `train` reads: the same sentences back
print(f"wrote {conll}: {len(check.sentences)} sentences, {sum(map(len, check.sentences))} tokens, "
      f"{len({t for tags in check.tags for t in tags})} tags")  # fmt: skip

# 2. Train a tagger (a BiLSTM with one output per token), then score it on the Keras backend.
run = work / "run"
rnncore("train", "--task", "tagging", "--data", conll, "--epochs", "4", "--seed", "0", "--quiet",
        "--out", run)  # fmt: skip
rnncore("evaluate", run, "--backend", "tensorflow", "--json")

spec = json.loads((run / "config.json").read_text(encoding="utf-8"))["spec"]
print(f"\nthe model: {spec['encoder']['cell']} x {spec['encoder']['num_layers']}, "
      f"bidirectional {spec['encoder']['bidirectional']}, pooling {spec['pooling']}, "
      f"{spec['head']['num_outputs']} tags")  # fmt: skip
