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
    over all of X, so words frequent everywhere do not crowd out the distinctive ones.
    """
    if not 0 <= label < model.n_labels:
        raise ValueError(f"label {label} out of range [0, {model.n_labels})")
    tree = model.tree
    Xp = model.preprocess(X)
    rows = sp.csc_matrix(Y)[:, label].indices
    copies = np.flatnonzero(tree.copy_label == label)
    clusters = tree.parents[-1][copies]
    p = model.params
    search, keep = gain_matching(p.disentangle, p.predict)
    M = match(Xp[rows], tree, model.weights[:-1], search, bias=p.solver.bias, keep=keep)
    M = sp.csc_matrix(M)
    background = np.asarray(Xp.mean(axis=0)).ravel()  # features common everywhere say nothing
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
                {"feature": feature_names[j] if feature_names else int(j),
                 "weight": round(float(mean[j]), 4), "lift": round(float(lift[j]), 4)}
                for j in best if lift[j] > 0
            ],
        })
    name = model.label_names[label] if model.label_names else label
    return {"label": name, "index": label, "positives": len(rows), "clusters": out,
            "unrouted": int((~routed_any).sum())}
