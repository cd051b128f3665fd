"""The explain page's example: an HTML page and a bar chart of token attributions.

Run from the repository root with a text-classification run, e.g. the one the text tutorial
writes: python docs/scripts/explain_example.py runs/tutorials/text/run
(writes docs/assets/explain-example.html and docs/assets/explain-example.png).
"""

from __future__ import annotations

import sys
from pathlib import Path

from rnncore.explain import explain_texts, render_html

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TEXTS = ["a warm, funny and moving film", "a funny film, but far too long and dull"]


def main(run: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = explain_texts(run, TEXTS)
    (ASSETS / "explain-example.html").write_text(render_html(rows), encoding="utf-8")
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 2.2 * len(rows)))
    for ax, row in zip(axes, rows, strict=True):
        colours = ["tab:green" if s >= 0 else "tab:red" for s in row.scores]
        ax.bar(range(len(row.tokens)), row.scores, color=colours)
        ax.set_xticks(range(len(row.tokens)), row.tokens, fontsize=9)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title(f"predicted {row.label} (integrated gradients)", fontsize=10)
    axes[0].set_ylabel("attribution")
    fig.tight_layout()
    fig.savefig(ASSETS / "explain-example.png", dpi=80)
    print(f"wrote {ASSETS / 'explain-example.html'} and {ASSETS / 'explain-example.png'}")


if __name__ == "__main__":
    main(sys.argv[1])
