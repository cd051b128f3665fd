"""Cross-framework benchmarks of rnncore against hand-written PyTorch and Keras baselines.

Run from the repository root (this folder is not installed): `python -m benchmarks --quick`.
See `benchmarks/README.md` for the design, `python -m benchmarks --help` for the options.
"""
