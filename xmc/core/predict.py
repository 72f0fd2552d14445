"""Batched beam search through the layers, then copy merging and top-k.

Per chunk of instances (bounded memory), layer by layer: every instance's beam of parents is
expanded to their children; children are scored only where needed (``X[i] @ W[:, children of
p]`` for each instance i that kept p, in a compiled kernel, ``xmc.core.kernels``); scores are
mapped through the post-processor and multiplied down the path; the best ``beam_size`` nodes
survive. At the last layer the children are label copies: a label's copies are merged (max)
and the top-k labels returned. No Python loop runs per instance or per parent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from xmc.core.executor import Executor
from xmc.core.sparse import from_topk, topk_dense, topk_rows, with_bias
from xmc.core.tree import LabelTree
from xmc.params import PredictParams

MARGIN_TIE_BREAK = 1e-3
"""Weight of the margin term of ``post_process(..., tie_break=True)``, which prediction uses. Above the
margin the lp-hinge is flat, and float32 rounds ``exp(-(1 - z)^6)`` to 1 from z = 0.945 on, so every
confident node scores exactly 1 and the top labels tie, broken by label index: on debian-tags' TF-IDF
30 % of validation rows had their first two labels tied. A term this small only orders such ties, by
margin: it resolves margins up to ~10 in float32 and moves any other score by under 0.3 %.
Validation P@1 +0.14 on debian-tags' TF-IDF (12 splits, every one up), no other set beyond +-0.02;
the fit's own matching keeps index order, where the term cost debian-tags' TF-IDF 0.08
(docs/performance.md)."""

_SLICE_ROWS = 512
"""Rows of a block the tie-broken transform works on at a time: bounds its one temporary (the beam's
blocks are its largest arrays) and keeps each slice in cache."""


def post_process(z: np.ndarray, kind: str, *, in_place: bool = False, tie_break: bool = False) -> np.ndarray:
    """Map linear scores to (0, 1]: lp-hinge ``exp(-max(0, 1-z)^p)`` ('l6-hinge': p = 6) or the sigmoid.

    A larger p keeps every score above the margin-free zone near 1 and drives those below 0 down
    faster, so a path is ranked mostly by whether each of its classifiers says yes. ``tie_break``
    subtracts ``MARGIN_TIE_BREAK * c(1 - z)`` inside the ``exp``, with ``c(u)`` ``1 + u`` for u > 0 and
    ``1 / (1 - u)`` below: positive, continuous and increasing in u, so the score keeps rising with z
    past the margin, where the hinge alone is flat, at no transcendental beyond the ``exp``.
    ``in_place`` overwrites ``z`` (the same operations, so the same numbers) instead of allocating a
    block-sized temporary: the beam's candidate blocks are its largest arrays.
    """
    out = z if in_place else None
    if not kind.endswith("-hinge"):
        t = np.negative(z, out=out)
        np.exp(t, out=t)
        np.add(t, 1.0, out=t)
        return np.divide(1.0, t, out=t)
    p, one = int(kind[1:-6]), z.dtype.type(1.0)
    if not tie_break:
        t = np.subtract(one, z, out=out)
        np.maximum(t, 0.0, out=t)
        np.power(t, p, out=t)
        np.negative(t, out=t)
        return np.exp(t, out=t)
    out = z if in_place else np.empty_like(z)
    for a in range(0, len(z), _SLICE_ROWS):
        u = np.subtract(one, z[a : a + _SLICE_ROWS], out=out[a : a + _SLICE_ROWS])  # u = 1 - z
        hinge = np.maximum(u, 0.0)
        np.minimum(u, 0.0, out=u)
        np.subtract(one, u, out=u)
        np.reciprocal(u, out=u)
        np.add(u, hinge, out=u)  # c(u): 1 / (1 - u) below 0, 1 + u above
        np.multiply(u, z.dtype.type(MARGIN_TIE_BREAK), out=u)
        np.power(hinge, p, out=hinge)
        np.add(u, hinge, out=u)
        np.negative(u, out=u)
        np.exp(u, out=u)
    return out


class ScoringLayer:
    """A layer's weights as per-parent blocks over the features each block uses.

    Block p holds the rows of ``W[:, children of p]`` that have a nonzero, stacked into one CSR
    (``rows``, one row per (parent, feature) pair, columns = child within the parent), with the
    global feature of each row in ``features``. Memory is O(nnz(W)): a CSR per parent over all D
    features would need a (D + 1) row pointer each, clusters x D in all (9 GiB at 1M labels).
    Building one passes over nnz(W) twice (``xmc.core.kernels.parent_blocks``), so callers that
    score many chunks (the gain shards) build the layers once (``scoring_layers``) and share them: at
    1M labels, rebuilding them per 8K-row shard was 28 s of a 37 s gain pass. Safe to share between
    threads and to pickle.
    """

    def __init__(self, W: sp.csc_matrix, ptr: np.ndarray) -> None:
        from xmc.core.kernels import parent_blocks  # numba loads with the first prediction, not the import

        self.ptr = ptr
        self.width = int(np.diff(ptr).max()) if len(ptr) > 1 else 0
        self.features, self.row_ptr, self.rows = parent_blocks(W, ptr)
        """``features[row_ptr[p]:row_ptr[p + 1]]``: parent p's sorted features, the rows of its block."""
        self.n_features = W.shape[0]

    def scores(self, Xr: sp.csr_matrix, p: int) -> np.ndarray:
        """Dense (rows of Xr x children of p) linear scores ``Xr @ W[:, children of p]``: the readable
        form of what the beam's compiled kernel sums (``xmc.core.kernels.expand_scores``, tested
        against this)."""
        a, b = int(self.row_ptr[p]), int(self.row_ptr[p + 1])
        features = self.features[a:b]  # sorted
        col = np.searchsorted(features, Xr.indices)
        hit = col < b - a
        hit[hit] = features[col[hit]] == Xr.indices[hit]
        indptr = np.concatenate([[0], np.cumsum(hit)])[Xr.indptr]  # kept entries before each row
        X_local = sp.csr_matrix((Xr.data[hit], col[hit], indptr), shape=(Xr.shape[0], b - a))
        m = int(self.ptr[p + 1] - self.ptr[p])
        return (X_local @ self.rows[a:b]).toarray()[:, :m]


def _expand(
    Xb: sp.csr_matrix, layer: ScoringLayer, beam_idx: np.ndarray, beam_score: np.ndarray, kind: str,
    tie_break: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Score the children of every beam entry; returns (index, score) blocks, a row's entries'
    children one after another in beam order, padded (-1, -inf) to the chunk's most in a row.

    The linear scores come from the compiled kernel (``xmc.core.kernels.expand_scores``: the sums
    of ``layer.scores`` row by row); the transform and the product down the path stay numpy's."""
    from xmc.core.kernels import expand_scores  # numba loads with the first prediction, not the import

    cand_idx, z, path = expand_scores(Xb, beam_idx, beam_score, layer)
    # in place: z's memory (the candidate blocks are the largest arrays)
    scores = post_process(z, kind, in_place=True, tie_break=tie_break)
    scores *= path  # times the path's score
    scores[cand_idx < 0] = -np.inf
    return cand_idx, scores


def _beam_chunk(
    Xb: sp.csr_matrix, layers: Sequence[ScoringLayer], beam_size: int, kind: str, tie_break: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Run the beam through ``layers``; returns the last layer's scored candidates (padded).
    ``tie_break``: ``post_process``'s margin term in every layer (prediction's, not the fit's)."""
    n = Xb.shape[0]
    beam_idx = np.zeros((n, 1), dtype=np.int64)
    beam_score = np.ones((n, 1), dtype=np.float32)
    cand_idx, cand_score = beam_idx, beam_score
    for t, layer in enumerate(layers):
        cand_idx, cand_score = _expand(Xb, layer, beam_idx, beam_score, kind, tie_break)
        if t < len(layers) - 1:
            beam_idx, beam_score = topk_dense(cand_score, cand_idx, beam_size)
            # a layer of fewer nodes than the beam pads every row (best first, padding last): the
            # next layer's blocks would be mostly padding (pypi-tags: 4 of 10 slots live, 80 MiB)
            live = max(int((beam_idx >= 0).sum(axis=1).max(initial=0)), 1)
            beam_idx, beam_score = beam_idx[:, :live], beam_score[:, :live].astype(np.float32)
    return cand_idx, cand_score


def _merge_copies(
    cand_idx: np.ndarray, cand_score: np.ndarray, copy_label: np.ndarray, unique_labels: bool, how: str
) -> tuple[np.ndarray, np.ndarray]:
    """Map copies to labels; a label retrieved through several copies gets their max (or mean)."""
    from xmc.core.kernels import merge_copy_scores

    if unique_labels:
        return np.where(cand_idx >= 0, copy_label[np.maximum(cand_idx, 0)], -1), cand_score
    return merge_copy_scores(cand_idx, cand_score, copy_label, how)


def scoring_layers(tree: LabelTree, weights: Sequence[sp.csc_matrix]) -> list[ScoringLayer]:
    """The first ``len(weights)`` layers of the tree, ready to score."""
    return [ScoringLayer(W, tree.children_ptr(t)) for t, W in enumerate(weights)]


def _scored_chunks(
    X: sp.csr_matrix, layers: Sequence[ScoringLayer], params: PredictParams, bias: float, beam_size: int,
    tie_break: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per chunk of ``chunk_size`` rows, the last given layer's scored candidates (padded)."""
    for start in range(0, X.shape[0], params.chunk_size):
        Xb = with_bias(X[start : start + params.chunk_size], bias)
        yield _beam_chunk(Xb, layers, beam_size, params.post_processor, tie_break)


def stack_rows(parts: list[sp.csr_matrix], n_cols: int) -> sp.csr_matrix:
    """The parts' rows one under another (no part: an empty n_cols-wide matrix)."""
    if not parts:
        return sp.csr_matrix((0, n_cols), dtype=np.float32)
    return sp.csr_matrix(sp.vstack(parts, format="csr"))


def predict(
    X: sp.csr_matrix,
    tree: LabelTree,
    weights: Sequence[sp.csc_matrix],
    params: PredictParams,
    *,
    bias: float,
    topk: int | None = None,
    beam_size: int | None = None,
) -> sp.csr_matrix:
    """Top-k label scores (N x n_labels CSR) by beam search; X must be preprocessed like training."""
    return predict_ensemble(X, [(tree, weights)], params, bias=bias, topk=topk, beam_size=beam_size)


def predict_ensemble(
    X: sp.csr_matrix,
    members: Sequence[tuple[LabelTree, Sequence[sp.csc_matrix] | Sequence[ScoringLayer]]],
    params: PredictParams,
    *,
    bias: float,
    topk: int | None = None,
    beam_size: int | None = None,
    executor: Executor | None = None,
) -> sp.csr_matrix:
    """Top-k of the label scores averaged over the trees of an ensemble (one tree: plain beam search).

    A member's layers are its weights, or their ``scoring_layers`` built already (a worker that
    scores many shards with one model builds them once).

    Every label a tree's beam reaches counts with its path score, a label a tree does not reach
    with 0 (Parabel's averaging), so a label all trees agree on outranks one a single tree likes.
    Scores past the margin are ordered by it (``MARGIN_TIE_BREAK``); the fit's matching is not.

    With an ``executor``, chunks of rows are its units (the local one's threads: the kernels release
    the GIL), as PECOS, omikuji and napkinXC predict on every core; without, one after another. The
    rows are independent, so the result is the same either way.
    """
    n_labels = members[0][0].n_labels
    # more than every label (or every node of the widest layer) changes nothing: clip, so an
    # absurd --topk does not allocate rows x topk
    topk = min(params.topk if topk is None else topk, n_labels)
    # T trees score T candidate blocks per chunk: T times fewer rows keep one tree's memory
    params = replace(params, chunk_size=max(1, params.chunk_size // len(members)))
    scoring = []
    for tree, weights in members:
        beam = min(params.beam_size if beam_size is None else beam_size, _widest(tree))
        unique = len(np.unique(tree.copy_label)) == len(tree.copy_label)
        built = bool(weights) and isinstance(weights[0], ScoringLayer)
        layers = list(weights) if built else scoring_layers(tree, weights)
        scoring.append(MemberScoring(tree, layers, beam, unique))
    shared = EnsembleInputs(X, scoring, params, bias, topk)
    if executor is None or X.shape[0] <= params.chunk_size:
        return ensemble_rows(shared, Shard(0, X.shape[0]))
    ranges = row_shards(X.shape[0], params.chunk_size)
    return stack_rows(executor.map(ensemble_rows, shared, ranges, desc="predict"), n_labels)


@dataclass(frozen=True)
class MemberScoring:
    """One tree of an ensemble, ready to score: its layers built, its beam, whether every label has
    one copy (then nothing is merged)."""

    tree: LabelTree
    layers: list[ScoringLayer]
    beam: int
    unique_labels: bool


@dataclass(frozen=True)
class EnsembleInputs:
    """What every chunk of a prediction reads (``ensemble_rows``)."""

    X: sp.csr_matrix
    members: list[MemberScoring]
    params: PredictParams
    bias: float
    topk: int


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)``: a unit of work over rows (matching, gains, prediction)."""

    start: int
    stop: int


def row_shards(n_rows: int, rows_per_shard: int) -> list[Shard]:
    """``n_rows`` rows cut into shards of ``rows_per_shard`` (the last one shorter)."""
    return [Shard(a, min(a + rows_per_shard, n_rows)) for a in range(0, n_rows, rows_per_shard)]


def ensemble_rows(shared: EnsembleInputs, rows: Shard) -> sp.csr_matrix:
    """The top-k CSR of rows ``[start, stop)``, chunk by chunk (a pure work unit)."""
    from xmc.core.kernels import merge_topk

    X, params, topk = shared.X[rows.start : rows.stop], shared.params, shared.topk
    n_labels = shared.members[0].tree.n_labels
    runs = [_scored_chunks(X, m.layers, params, shared.bias, m.beam, tie_break=True) for m in shared.members]
    parts = []
    for chunks in zip(*runs, strict=True):
        if len(runs) == 1:  # one tree: its top k straight from the candidates, copies merged on the way
            (cand_idx, cand_score), = chunks
            idx, vals = merge_topk(cand_idx, cand_score, shared.members[0].tree.copy_label, params.copy_merge,
                                   topk)
        else:  # sparse sums merge each row's labels in C; a lexsort of the stacked blocks was 9x slower
            merged = [_merge_copies(idx_t, score_t, m.tree.copy_label, m.unique_labels, params.copy_merge)
                      for m, (idx_t, score_t) in zip(shared.members, chunks, strict=True)]
            total = sum((from_topk(labels, scores, n_labels) for labels, scores in merged),
                        sp.csr_matrix((len(merged[0][0]), n_labels), dtype=np.float32))
            idx, vals = topk_rows(sp.csr_matrix(total) / len(merged), topk)
        parts.append(from_topk(idx, vals, n_labels))
    return stack_rows(parts, n_labels)


def match(
    X: sp.csr_matrix,
    tree: LabelTree,
    weights: Sequence[sp.csc_matrix],
    params: PredictParams,
    *,
    bias: float,
    beam_size: int | None = None,
    keep: int | None = None,
) -> sp.csr_matrix:
    """Matching matrix M (N x nodes of the last given layer): 1 where the node is in the beam.

    With all layers but the last, this is the method's M over leaf clusters. ``keep`` < beam
    keeps only the best ``keep`` nodes of the final beam (the search itself stays that wide).
    """
    return match_layers(X, tree, scoring_layers(tree, weights), params, bias=bias, beam_size=beam_size,
                        keep=keep)


def leaf_beam_scores(
    X: sp.csr_matrix, tree: LabelTree, weights: Sequence[sp.csc_matrix], params: PredictParams, *,
    bias: float,
) -> sp.csr_matrix:
    """(N x nodes of the last given layer) path scores of each row's beam (0 outside it)."""
    layers = scoring_layers(tree, weights)
    beam_size = min(params.beam_size, _widest(tree))
    n_nodes = len(tree.parents[len(layers) - 1])
    return stack_rows([from_topk(idx, np.where(idx >= 0, score, 0.0), n_nodes)
                   for idx, score in _scored_chunks(X, layers, params, bias, beam_size)], n_nodes)


def match_layers(
    X: sp.csr_matrix,
    tree: LabelTree,
    layers: Sequence[ScoringLayer],
    params: PredictParams,
    *,
    bias: float,
    beam_size: int | None = None,
    keep: int | None = None,
) -> sp.csr_matrix:
    """``match`` through layers already built by ``scoring_layers`` (shared by many calls)."""
    beam_size = min(params.beam_size if beam_size is None else beam_size, _widest(tree))
    n_nodes = len(tree.parents[len(layers) - 1])
    parts = []
    for cand_idx, cand_score in _scored_chunks(X, layers, params, bias, beam_size):
        idx, _ = topk_dense(cand_score, cand_idx, beam_size if keep is None else min(keep, beam_size))
        parts.append(from_topk(idx, np.ones(idx.shape, np.float32), n_nodes))
    return stack_rows(parts, n_nodes)


def _widest(tree: LabelTree) -> int:
    return max(1, max(len(p) for p in tree.parents))
