"""Data for training: readers for common file layouts, splits, length bucketing, bundled datasets.

Everything here is numpy and the standard library. A typical run::

    from rnncore.data import LabelVocab, bucket_batches, load_bundled, split

    ds = load_bundled("rotten_tomatoes")             # or read_texts("reviews.csv")
    train_idx, val_idx, test_idx = split(len(ds), (0.8, 0.1, 0.1), seed=0)
    train, test = ds.subset(train_idx), ds.subset(test_idx)
    vocab = LabelVocab.fit(train.labels)              # sorted labels -> 0..K-1
    y_test = vocab.encode(test.labels, "the test split")
    for batch in bucket_batches(lengths, batch_size=32, seed=epoch):
        ...

Bad input raises `DataError` (a ValueError) naming the file, the line and the fix.
"""

from ._files import DataError
from .containers import LabelVocab, SequenceDataset, TaggedDataset, TextDataset
from .datasets import BUNDLED, bundled_path, load_bundled
from .readers import read_class_folders, read_conll, read_conllu, read_jsonl, read_table, read_texts
from .sequences import read_idx, read_mnist, read_npz
from .splits import bucket_batches, padding_fraction, split

__all__ = [
    "BUNDLED",
    "DataError",
    "LabelVocab",
    "SequenceDataset",
    "TaggedDataset",
    "TextDataset",
    "bucket_batches",
    "bundled_path",
    "load_bundled",
    "padding_fraction",
    "read_class_folders",
    "read_conll",
    "read_conllu",
    "read_idx",
    "read_jsonl",
    "read_mnist",
    "read_npz",
    "read_table",
    "read_texts",
    "split",
]
