"""Disentangled prototypes: one prototype per label copy, its centroid over the documents routed to it.

Beyond both papers. The reassignment gives a label with several senses a copy in each cluster that
gathers one of them; a single prototype averages the senses into a point between them. Here each
positive pair (document i, label l) is routed to the copy of l whose leaf cluster the tree's
matcher scores highest for i (the first copy when the beam reaches none), and copy c's prototype is
the prototype network applied to l's text, l's free vector and bias, and the centroid of the
documents routed to c. A label's dense score is the max over its copies, as for the tree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from xmc.core.predict import leaf_beam_scores
from xmc.core.sparse import csr
from xmc.core.tree import LabelTree
from xmc.params import XMCParams

if TYPE_CHECKING:
    import torch

    from xmc.core.dense.model import Triple
    from xmc.core.dense.net import PrimeNet


def copy_rows(X: sp.csr_matrix, Y: sp.csr_matrix, tree: LabelTree, weights: list[sp.csc_matrix],
              params: XMCParams) -> sp.csr_matrix:
    """Y over copies (N x n_copies): each positive pair moved to the copy its document is routed to."""
    Y = csr(Y)
    leaf = leaf_beam_scores(X, tree, weights[:-1], params.predict, bias=params.solver.bias).tocsr()
    order = np.argsort(tree.copy_label, kind="stable")
    ptr = np.searchsorted(tree.copy_label[order], np.arange(tree.n_labels + 1))
    rows = np.repeat(np.arange(Y.shape[0]), np.diff(Y.indptr))
    labels = Y.indices
    n_copies = ptr[labels + 1] - ptr[labels]
    pair = np.repeat(np.arange(len(labels)), n_copies)
    first = np.repeat(ptr[labels], n_copies)
    offset = np.arange(len(pair)) - np.repeat(np.cumsum(n_copies) - n_copies, n_copies)
    cand = order[first + offset]
    score = np.asarray(leaf[rows[pair], tree.parents[-1][cand]]).ravel()
    best = np.lexsort((offset, -score, pair))  # per pair: highest score, then the first copy
    take = best[np.searchsorted(pair[best], np.arange(len(labels)))]
    return sp.csr_matrix((np.ones(len(labels), np.float32), (rows, cand[take])),
                         shape=(Y.shape[0], len(tree.copy_label)))


def copy_prototypes(net: PrimeNet, X: sp.csr_matrix, Yc: sp.csr_matrix, copy_label: np.ndarray,
                    text: Triple | None, device: str, chunk: int = 8192) -> torch.Tensor:
    """(n_copies x (d + 1)) prototypes: copy c = the network on its label's text, free vector, bias and
    the unit centroid of the documents routed to c."""
    import torch
    import torch.nn.functional as F

    from xmc.core.dense.model import text_slice
    from xmc.core.dense.train import embed

    E = embed(net, X, device).cpu().numpy()
    C = F.normalize(torch.from_numpy(np.asarray(Yc.T.tocsr() @ E)).to(device), dim=-1)
    out = []
    with torch.no_grad():
        for a in range(0, len(copy_label), chunk):
            lab = torch.from_numpy(copy_label[a:a + chunk].astype(np.int64)).to(device)
            t = None
            if text is not None:  # each copy reads its label's text row
                rows = [text_slice(text, j, j + 1) for j in lab.tolist()]
                ids = torch.cat([r[0] for r in rows])
                counts = torch.tensor([len(r[0]) for r in rows], device=device)
                indptr = torch.cat([torch.zeros(1, dtype=torch.int64, device=device), counts.cumsum(0)])
                t = net.encoder.bag(ids, indptr, torch.cat([r[2] for r in rows]))
            out.append(net.prototypes(lab, t, C[a:a + chunk] if net.prototypes.params.centroids else None))
    return torch.cat(out)
