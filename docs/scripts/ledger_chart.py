"""The performance page's chart: every grid point's combined ratio from benchmarks/ledger.csv.

Run from the repository root: python docs/scripts/ledger_chart.py  (writes docs/assets/ledger-ratios.png)

It reads the same figures `python -m benchmarks.ledger report` summarises (rows that measured the
code as it is, each point's runs combined), so the chart and the report cannot disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import grid, ledger  # noqa: E402

OUT = ROOT / "docs" / "assets" / "ledger-ratios.png"
LABELS = {"torch": "PyTorch", "tensorflow": "Keras (TensorFlow)"}


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = ledger.combined(ledger.current(ledger.read()))
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6), sharey=False)
    for ax, (framework, mode) in zip(
        axes, [(f, m) for f in ledger.FRAMEWORKS for m in grid.MODES], strict=True
    ):
        ratios = sorted(f.ratio for (_, m, fw), f in figures.items() if fw == framework and m == mode)
        ax.plot(range(len(ratios)), ratios, ".", markersize=3)
        ax.axhline(ledger.TARGET_RATIO, color="tab:red", linewidth=1, label=f"target {ledger.TARGET_RATIO}")
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"{LABELS[framework]}, {mode}", fontsize=10)
        ax.set_xlabel(f"{len(ratios)} grid points, sorted")
        if ratios[-1] > 3:  # padded torch training runs up to ~38x the packed baseline
            ax.set_yscale("log")
    axes[0].set_ylabel("rnncore / best hand-written baseline")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
