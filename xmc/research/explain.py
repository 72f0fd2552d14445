"""Why a label lives where it does: its clusters, their gains, and what each copy's instances say.

For label l: every leaf cluster holding a copy of l, the precision gain ``G[l, k]`` (training
instances of l the matcher sends to k), and the top features of the instances of l routed to
each copy. Two copies whose top features read like two topics are a disentangled label
("apple" the fruit vs the brand).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from xmc.core.disentangle import gain_matching
from xmc.core.model import XMCModel
from xmc.core.predict import match


def explain_label(
    model: XMCModel, X: sp.spmatrix, Y: sp.spmatrix, label: int,
    feature_names: list[str] | None = None, top: int = 10,
) -> dict[str, Any]:
    """Clusters of ``label`` with gains and the top features of the instances routed to each.

    Features are ranked by lift: their mean weight in the copy's instances minus their mean
    over all of X, so words frequent everywhere do not crowd out the distinctive ones. For an
    ensemble, tree 0's clusters are on top and ``trees`` holds every tree's.
    """
    if not 0 <= label < model.n_labels:
        raise ValueError(f"label {label} out of range [0, {model.n_labels})")
    Xp = model.preprocess(X)
    names = column_names(model, feature_names)
    rows = sp.csc_matrix(Y)[:, label].indices
    background = np.asarray(Xp.mean(axis=0)).ravel()  # features common everywhere say nothing
    per_tree = [_tree_clusters(m, Xp, rows, label, background, names, top) for m in model.trees]
    name = model.label_names[label] if model.label_names else label
    out: dict[str, Any] = {"label": name, "index": label, "positives": len(rows), **per_tree[0]}
    if len(per_tree) > 1:  # an ensemble: each tree places the label on its own; tree 0 stays on top
        out["trees"] = [{"tree": t, **found} for t, found in enumerate(per_tree)]
    return out


def column_names(model: XMCModel, feature_names: list[str] | None) -> list[str | int]:
    """A name per column of the model's rows: the feature's (its index without names), then each pair
    column's as 'a & b' of its two features (``xmc.core.feature_pairs``)."""
    D = model.n_features
    own: list[str | int] = list(feature_names[:D]) if feature_names else list(range(D))
    pairs = [] if model.pairs is None else [f"{own[int(k) // D]} & {own[int(k) % D]}" for k in model.pairs]
    return own + pairs


def _tree_clusters(
    model: XMCModel, Xp: sp.csr_matrix, rows: np.ndarray, label: int, background: np.ndarray,
    feature_names: list[str | int], top: int,
) -> dict[str, Any]:
    """One tree's clusters of ``label``: gain, routed instances and top features of each copy."""
    tree = model.tree
    copies = np.flatnonzero(tree.copy_label == label)
    clusters = tree.parents[-1][copies]
    p = model.params
    search, keep = gain_matching(p.disentangle, p.predict)
    M = match(Xp[rows], tree, model.weights[:-1], search, bias=p.solver.bias, keep=keep)
    M = sp.csc_matrix(M)
    routed_any = np.zeros(len(rows), bool)
    out = []
    for copy, k in zip(copies.tolist(), clusters.tolist(), strict=True):
        hit = np.zeros(len(rows), bool)
        hit[M[:, k].indices] = True
        hit &= ~routed_any  # an instance routed to several copies is counted at the first
        routed_any |= hit
        mean = np.asarray(Xp[rows[hit]].mean(axis=0)).ravel() if hit.any() else np.zeros(Xp.shape[1])
        lift = mean - background
        best = np.argsort(-lift, kind="stable")[:top]
        out.append({
            "copy": copy, "cluster": k, "gain": int(M[:, k].nnz),
            "instances": int(hit.sum()),
            "top_features": [
                {"feature": feature_names[j],
                 "weight": round(float(mean[j]), 4), "lift": round(float(lift[j]), 4)}
                for j in best if lift[j] > 0
            ],
        })
    return {"clusters": out, "unrouted": int((~routed_any).sum())}
