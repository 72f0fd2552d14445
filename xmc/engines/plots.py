"""PNG plots of a training run, for the MLflow UI: precision by round, leaf sizes, label frequency.

Matplotlib runs on the Agg backend (no display needed on a cluster driver or in CI); every
function writes one PNG and returns its path, so the caller decides where artifacts live.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FEW_LEAVES = 40
"""Up to this many leaves, the leaf-size plot draws one bar per leaf."""


def precision_by_round(
    rounds: Sequence[dict[str, Any]], path: str | Path, best_round: int | None = None
) -> Path:
    """Held-out P@1/3/5 per round: the curve that says whether disentangling helped.

    Needs rounds scored on a validation split (``validation_fraction > 0``); rounds without a
    score are left out of the curve (the caller draws this plot only when some round has one).
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    scored = [r for r in rounds if r.get("validation")]
    xs = [int(r["round"]) for r in scored]
    for k, marker in ((1, "o"), (3, "s"), (5, "^")):
        ys = [r["validation"].get(f"P@{k}", np.nan) for r in scored]
        ax.plot(xs, ys, marker=marker, label=f"P@{k}")
        for x, y in zip(xs, ys, strict=True) if k == 1 else ():
            ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center",
                        fontsize=8)
    if best_round is not None:
        ax.axvline(best_round, color="grey", linestyle="--", label=f"kept: round {best_round}")
    ax.set_ylabel("held-out precision (%)")
    ax.set_xlabel("round (0 = single-partition baseline)")
    ax.set_xticks(xs)
    ax.margins(y=0.15)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("Held-out precision by round")
    return _save(fig, path)


def copies_by_round(
    rounds: Sequence[dict[str, Any]], path: str | Path, best_round: int | None = None
) -> Path:
    """Label copies (labels x clusters they live in) and labels living in several clusters, per round."""
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [int(r["round"]) for r in rounds]
    ax.plot(xs, [r.get("copies", 0) for r in rounds], marker="o", label="label copies (all clusters)")
    ax.plot(xs, [r.get("labels_copied", 0) for r in rounds], marker="s",
            label="labels in more than one cluster")
    if best_round is not None:
        ax.axvline(best_round, color="grey", linestyle="--", label=f"kept: round {best_round}")
    ax.set_xlabel("round (0 = single-partition baseline)")
    ax.set_ylabel("count")
    ax.set_xticks(xs)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("Label copies by round")
    return _save(fig, path)


def leaf_size_histogram(leaf_sizes: np.ndarray, path: str | Path) -> Path:
    """Labels (copies) per leaf cluster: the cost of each ranker and the balance of the tree.

    A few leaves get one bar each (largest first); many get a histogram of their sizes.
    """
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    lo, hi = (int(np.min(leaf_sizes)), int(np.max(leaf_sizes))) if len(leaf_sizes) else (0, 0)
    if len(leaf_sizes) <= FEW_LEAVES:
        ax.bar(np.arange(len(leaf_sizes)), np.sort(leaf_sizes)[::-1], color="tab:blue")
        ax.set_xlabel("leaf cluster (largest first)")
        ax.set_ylabel("label copies in the leaf")
    else:
        # one bar per size while sizes span few values (they do: the tree is balanced), else 50 bins
        bins: Any = np.arange(lo, hi + 2) - 0.5 if hi - lo < 50 else 50
        ax.hist(leaf_sizes, bins=bins, color="tab:blue", rwidth=0.9)
        ax.set_xlabel("label copies in the leaf cluster")
        ax.set_ylabel("leaf clusters")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Leaf cluster sizes: {len(leaf_sizes)} leaves, {lo} to {hi} label copies")
    return _save(fig, path)


def frequency_vs_precision(label_counts: np.ndarray, label_precision: np.ndarray, path: str | Path,
                           *, data_name: str = "validation") -> Path:
    """Per-label precision of the top-5 against training frequency (tail labels are the hard part).

    Labels never predicted have no precision (NaN) and are left out; frequency is on a log axis.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, ax = plt.subplots(figsize=(6, 4))
    keep = np.isfinite(label_precision)
    ax.scatter(np.maximum(label_counts[keep], 1), 100 * label_precision[keep], s=6, alpha=0.5)
    ax.set_xscale("log")
    # labelled ticks at 1, 2, 5 x 10^k as plain numbers; unlabelled minor ticks (their default
    # labels overlap on a short log range)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training documents with the label (log scale)")
    ax.set_ylabel("precision of the label in top-5 (%)")
    split = {"heldout": "held-out rows", "train": "a sample of training rows"}.get(data_name, data_name)
    ax.set_title(f"Label frequency vs precision ({split})")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
