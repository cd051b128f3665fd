"""Results: grid entries with ratios, the terminal table, the JSON file and the PNG plots."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from .grid import Point
from .timing import Impl, Series

TARGET_RATIO = 0.97
RNNCORE = {"torch": "rnncore_torch", "tensorflow": "rnncore_keras"}


def entry(
    point: Point,
    mode: str,
    arrays: dict[str, Any],
    impls: list[Impl],
    series: dict[str, Series],
    min_quiet: int,
    peak_gflops: float | None,
) -> dict[str, Any]:
    """One grid point and mode: every implementation's figures, then the ratios between them."""
    padded = int(arrays["ids"].size)
    valid = int(arrays["lengths"].sum())
    flops = point.flops(mode, valid)
    found: dict[str, Any] = {}
    for impl in impls:
        summary = series[impl.name].summary(min_quiet)
        found[impl.name] = {
            "framework": impl.framework,
            "is_rnncore": impl.is_rnncore,
            "note": impl.note,
            "same_process": True,
            **summary,
            **rates(summary.get("median_s"), padded, valid, flops, peak_gflops),
        }
    out = {
        "point": point.as_dict(),
        "mode": mode,
        "tokens_padded": padded,
        "tokens_valid": valid,
        "flops": flops,
        "impls": found,
    }
    out["ratios"] = ratios(found)
    return out


def rates(
    median_s: float | None, padded: int, valid: int, flops: float, peak_gflops: float | None
) -> dict[str, Any]:
    if not median_s:
        return {
            "tokens_per_s_padded": None,
            "tokens_per_s_valid": None,
            "gflops": None,
            "fraction_of_peak": None,
        }
    gflops = flops / median_s / 1e9
    return {
        "tokens_per_s_padded": padded / median_s,
        "tokens_per_s_valid": valid / median_s,
        "gflops": gflops,
        "fraction_of_peak": gflops / peak_gflops if peak_gflops else None,
    }


def ratios(impls: dict[str, Any]) -> dict[str, Any]:
    """rnncore / best same-framework baseline, both measured in this process in this run.

    `ratio` compares median calls (the best baseline is the one with the highest median
    throughput); `ratio_fastest_calls` compares each side's fastest call, which is less
    sensitive to interference (noise only slows calls down).

    Only implementations timed here, interleaved with rnncore, count as baselines (keras-on-torch
    runs in another process and is reported beside them, never in a ratio).
    """
    out: dict[str, Any] = {}
    for framework, ours in RNNCORE.items():
        mine = impls.get(ours)
        api = impls.get(ours + "_api")
        baselines = {
            name: r
            for name, r in impls.items()
            if r["framework"] == framework and not r["is_rnncore"] and r["same_process"]
            and r.get("tokens_per_s_padded")
        }  # fmt: skip
        if mine is None or not mine.get("tokens_per_s_padded") or not baselines:
            continue
        best = max(baselines, key=lambda n: baselines[n]["tokens_per_s_padded"])
        ratio = mine["tokens_per_s_padded"] / baselines[best]["tokens_per_s_padded"]
        # the same from each side's fastest call: noise only ever slows a call down
        fastest = min(r["min_s"] for r in baselines.values())
        ratio_fastest = fastest / mine["min_s"] if mine.get("min_s") else None
        contended = bool(mine.get("contended") or baselines[best].get("contended"))
        out[framework] = {
            "rnncore": ours,
            "best_baseline": best,
            "ratio": ratio,
            "noise": _ratio_noise(ratio, mine, baselines[best]),
            "ratio_fastest_calls": ratio_fastest,
            "baseline_ratios": {
                n: mine["tokens_per_s_padded"] / r["tokens_per_s_padded"] for n, r in baselines.items()
            },
            "contended": contended,
            "meets_target": ratio >= TARGET_RATIO,
        }
        if api and api.get("tokens_per_s_padded"):
            out[framework]["api"] = ours + "_api"
            out[framework]["api_ratio"] = api["tokens_per_s_padded"] / baselines[best]["tokens_per_s_padded"]
            out[framework]["api_overhead_s"] = (api.get("median_s") or 0.0) - (mine.get("median_s") or 0.0)
            out[framework]["api_contended"] = bool(api.get("contended") or baselines[best].get("contended"))
    return out


def _ratio_noise(ratio: float, a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """One standard error of a ratio of two means, from each side's spread between repetitions."""
    terms = []
    for side in (a, b):
        cv, n = side.get("rep_cv"), (side.get("quiet_reps") or side.get("reps") or 0)
        if cv is None or n < 2:
            return None
        terms.append(cv * cv / n)
    return ratio * math.sqrt(sum(terms))


def merge_keras_torch(entries: list[dict[str, Any]], worker: dict[str, Any]) -> None:
    """Put the keras-on-torch worker's figures beside the grid entries of the same point and mode."""
    by_key = {(e["point"]["key"], e["mode"]): e for e in entries}
    for result in worker.get("results", []):
        target = by_key.get((result["point"], result["mode"]))
        if target is None:
            continue
        summary = result["summary"]
        target["impls"]["keras_torch"] = {
            "framework": "keras-torch",
            "is_rnncore": False,
            "note": "Keras 3 on torch, predict_on_batch / train_on_batch, separate process",
            "same_process": False,
            **summary,
            **rates(
                summary.get("median_s"), target["tokens_padded"], target["tokens_valid"], target["flops"],
                worker.get("peak_gflops"),
            ),
        }  # fmt: skip


# ---- terminal table ---------------------------------------------------------------------------
COLUMNS = (
    "rnncore_torch",
    "rnncore_torch_api",
    "torch_eager",
    "torch_compile",
    "rnncore_keras",
    "rnncore_keras_api",
    "keras_tf",
    "keras_tf_xla",
    "keras_torch",
)


def _k(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e3:.1f}k" if value < 1e6 else f"{value / 1e6:.2f}M"


def short_key(point: dict[str, Any]) -> str:
    d = "bi" if point["bidirectional"] else "uni"
    m = "mask" if point["masked"] else "fix"
    return (
        f"{point['cell']} {point['layers']}L {d} T{point['seq_len']} B{point['batch']} H{point['hidden']} {m}"
    )


def table(entries: list[dict[str, Any]]) -> str:
    """Padded tokens/s per implementation (k = thousands), the two ratios, and flags.

    Flags: `*` an implementation had no quiet repetition (all contended), `~` fewer quiet
    repetitions than asked for, `!` a ratio under the 0.97 target; `±` one standard error of
    the ratio from the spread between repetitions. Latency labels: rt
    rnncore_torch, te torch_eager, rk rnncore_keras, kt keras_tf.
    """
    present = [c for c in COLUMNS if any(c in e["impls"] for e in entries)]
    head = ["point", "mode", *present, "torch ratio", "keras ratio", "p50/p99 ms at B=1"]
    rows = [head]
    for e in entries:
        cells = [short_key(e["point"]), e["mode"]]
        for name in present:
            r = e["impls"].get(name)
            if r is None:
                cells.append("")
                continue
            if r.get("error"):
                cells.append("error")
                continue
            flag = "*" if r.get("contended") else ("~" if r.get("few_quiet_reps") else "")
            cells.append(_k(r.get("tokens_per_s_padded")) + flag)
        for framework in ("torch", "tensorflow"):
            ratio = e["ratios"].get(framework)
            if ratio is None:
                cells.append("-")
            else:
                flag = ("*" if ratio["contended"] else "") + ("" if ratio["meets_target"] else "!")
                noise = f"±{ratio['noise']:.2f}" if ratio.get("noise") is not None else ""
                cells.append(f"{ratio['ratio']:.2f}{noise}{flag}")
        cells.append(_latency(e))
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


LATENCY_LABELS = {"rnncore_torch": "rt", "torch_eager": "te", "rnncore_keras": "rk", "keras_tf": "kt"}


def _latency(e: dict[str, Any]) -> str:
    if e["point"]["batch"] != 1:
        return ""
    parts = []
    for name, label in LATENCY_LABELS.items():
        r = e["impls"].get(name)
        if r and r.get("p50_s"):
            parts.append(f"{label} {r['p50_s'] * 1e3:.2f}/{r['p99_s'] * 1e3:.2f}")
    return " ".join(parts)


# ---- JSON -------------------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _clean(value.item())
    return value


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_clean(results), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


# ---- plots ------------------------------------------------------------------------------------
def plots(entries: list[dict[str, Any]], folder: Path) -> list[str]:
    """throughput.png (every point and mode) and scaling.png (seq length, hidden, batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    names = [c for c in COLUMNS if any(c in e["impls"] for e in entries)]
    if entries:
        labels = [f"{short_key(e['point'])} {e['mode']}" for e in entries]
        fig, ax = plt.subplots(figsize=(11, 0.45 * len(entries) * max(1, len(names)) / 3 + 2))
        height = 0.8 / max(1, len(names))
        for j, name in enumerate(names):
            values = [(e["impls"].get(name) or {}).get("tokens_per_s_valid") or 0.0 for e in entries]
            ax.barh([i + j * height for i in range(len(entries))], values, height=height, label=name)
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(entries))], labels, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("valid tokens / s (log)")
        ax.invert_yaxis()
        ax.legend(fontsize=7)
        ax.set_title("Throughput by configuration")
        fig.tight_layout()
        fig.savefig(folder / "throughput.png", dpi=110)
        plt.close(fig)
        written.append(str(folder / "throughput.png"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, axis in zip(axes, ("seq_len", "hidden", "batch"), strict=True):
        drawn = 0
        for (mode, rest), group in _series_along(entries, axis).items():
            for name in ("rnncore_torch", "torch_eager", "rnncore_keras", "keras_tf"):
                xs = [x for x, e in group if (e["impls"].get(name) or {}).get("tokens_per_s_valid")]
                ys = [e["impls"][name]["tokens_per_s_valid"] for x, e in group if x in xs]
                if len(xs) >= 2:
                    ax.plot(xs, ys, marker="o", label=f"{name} {mode}: {rest.split(' V')[0]}")
                    drawn += 1
        ax.set_title(f"scaling with {axis}")
        ax.set_xlabel(axis)
        ax.set_ylabel("valid tokens / s")
        if drawn:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.legend(fontsize=6)
        else:
            ax.text(
                0.5, 0.5, "no points vary only this axis in this run", ha="center", transform=ax.transAxes
            )
    fig.tight_layout()
    fig.savefig(folder / "scaling.png", dpi=110)
    plt.close(fig)
    written.append(str(folder / "scaling.png"))
    return written


def _series_along(entries: list[dict[str, Any]], axis: str) -> dict[tuple[str, str], list[tuple[int, Any]]]:
    """Entries grouped by everything but `axis` (and mode), each group sorted along `axis`.

    Keys are (mode, a short label of the fixed values, e.g. "lstm 1L uni B64 H128 fix").
    """
    groups: dict[tuple[str, str], list[tuple[int, Any]]] = defaultdict(list)
    for e in entries:
        p = e["point"]
        fixed = {**p, axis: None}
        label = short_key(fixed).replace(f" {axis}None", "")
        for prefix, key in (("T", "seq_len"), ("B", "batch"), ("H", "hidden")):
            if key == axis:
                label = label.replace(f" {prefix}None", "")
        extra = f" V{p['vocab']} E{p['embedding']}"
        groups[(e["mode"], label + extra)].append((p[axis], e))
    return {
        key: sorted(group, key=lambda g: g[0])
        for key, group in groups.items()
        if len({x for x, _ in group}) >= 2
    }
