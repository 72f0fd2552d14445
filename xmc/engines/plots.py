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


def precision_by_round(
    rounds: Sequence[dict[str, Any]], path: str | Path, best_round: int | None = None
) -> Path:
    """Validation P@k per round (the curve that says whether disentanglement helped).

    Without a validation split there is no precision: the plot shows copies per round instead.
    """
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [int(r["round"]) for r in rounds]
    if any(r.get("validation") for r in rounds):
        for k in (1, 3, 5):
            ys = [(r.get("validation") or {}).get(f"P@{k}", np.nan) for r in rounds]
            ax.plot(xs, ys, marker="o", label=f"P@{k}")
        ax.set_ylabel("validation precision (%)")
    else:
        ax.plot(xs, [r.get("copies", 0) for r in rounds], marker="o", label="label copies")
        ax.set_ylabel("label copies (no validation split)")
    if best_round is not None:
        ax.axvline(best_round, color="grey", linestyle="--", label=f"kept: round {best_round}")
    ax.set_xlabel("round (0 = single-partition baseline)")
    ax.set_xticks(xs)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def leaf_size_histogram(leaf_sizes: np.ndarray, path: str | Path) -> Path:
    """Labels (copies) per leaf cluster: the cost of each ranker and the balance of the tree."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    lo, hi = (int(np.min(leaf_sizes)), int(np.max(leaf_sizes))) if len(leaf_sizes) else (0, 0)
    # one bar per size while sizes span few values (they do: the tree is balanced), else 50 bins
    bins: Any = np.arange(lo, hi + 2) - 0.5 if hi - lo < 50 else 50
    ax.hist(leaf_sizes, bins=bins, color="tab:blue", rwidth=0.9)
    ax.set_xlabel("label copies in the leaf cluster")
    ax.set_ylabel("leaf clusters")
    ax.set_title(f"{len(leaf_sizes)} leaves, sizes {lo} to {hi}")
    return _save(fig, path)


def frequency_vs_precision(label_counts: np.ndarray, label_precision: np.ndarray, path: str | Path,
                           *, data_name: str = "validation") -> Path:
    """Per-label precision of the top-5 against training frequency (tail labels are the hard part).

    Labels never predicted have no precision (NaN) and are left out; frequency is on a log axis.
    """
    fig, ax = plt.subplots(figsize=(5, 3.5))
    keep = np.isfinite(label_precision)
    ax.scatter(np.maximum(label_counts[keep], 1), 100 * label_precision[keep], s=6, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("training frequency of the label")
    ax.set_ylabel(f"top-5 precision of the label (%, {data_name})")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
