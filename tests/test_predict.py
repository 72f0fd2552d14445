"""The beam search's per-parent weight blocks: exact scores, memory that follows nnz(W)."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp

from xmc.core.predict import ScoringLayer, _beam_chunk, _expand, post_process
from xmc.params import POST_PROCESSORS


def _layer_case(
    n_features: int, sizes: list[int], density: float, seed: int
) -> tuple[sp.csc_matrix, np.ndarray]:
    """Random layer weights: parents with the given numbers of children."""
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rng = np.random.default_rng(seed)
    nnz = int(density * n_features * ptr[-1])
    W = sp.csc_matrix((rng.standard_normal(nnz).astype(np.float32),
                       (rng.integers(0, n_features, nnz), rng.integers(0, ptr[-1], nnz))),
                      shape=(n_features, int(ptr[-1])))
    W.sum_duplicates()
    return W, ptr


def test_block_scores_equal_the_plain_product() -> None:
    W, ptr = _layer_case(300, [4, 1, 7, 3, 5], density=0.05, seed=0)
    W = sp.csc_matrix(W.multiply(np.isin(np.arange(W.shape[1]), [4, 5], invert=True)[None, :]))
    W.eliminate_zeros()  # parent 1 (child 4) has an empty block; child 5 has no weights
    assert W[:, 4].nnz == 0 and W[:, 5].nnz == 0
    X = sp.random(9, 300, density=0.1, random_state=1, dtype=np.float32, format="csr")
    X = sp.csr_matrix(sp.vstack([sp.csr_matrix((1, 300), dtype=np.float32), X,
                                 sp.csr_matrix((2, 300), dtype=np.float32)]))  # empty first/last rows
    layer = ScoringLayer(W, ptr)
    for p in range(len(ptr) - 1):
        expected = (X @ W[:, ptr[p] : ptr[p + 1]]).toarray()
        got = layer.scores(X, p)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        rows = np.array([3, 0, 11])  # a subset of rows in any order, as the beam passes them
        np.testing.assert_allclose(layer.scores(X[rows], p), expected[rows], rtol=1e-6, atol=1e-7)



@pytest.mark.parametrize("seed", [3, 4])
def test_each_parents_block_holds_its_sorted_features_and_their_weights_exactly(seed: int) -> None:
    """The block arrays by their definition: parent p's rows are the features that any of its children
    weighs, ascending, and row (p, j) holds ``W[j, children of p]`` exactly, children ascending (the
    kernel's sums add in that order)."""
    W, ptr = _layer_case(400, [5, 1, 9, 2, 7, 3], density=0.04, seed=seed)
    W = sp.csc_matrix(W.multiply(np.arange(W.shape[1]) != 5))  # parent 1 (child 5): no weights
    W.eliminate_zeros()
    layer = ScoringLayer(W, ptr)
    assert layer.rows.has_sorted_indices and layer.rows.dtype == np.float32
    for p in range(len(ptr) - 1):
        block = W[:, ptr[p] : ptr[p + 1]].tocsr()
        used = np.flatnonzero(np.diff(block.indptr))
        a, b = layer.row_ptr[p], layer.row_ptr[p + 1]
        assert np.array_equal(layer.features[a:b], used)
        got = layer.rows[a:b, : ptr[p + 1] - ptr[p]]
        assert np.array_equal(got.toarray(), block[used].toarray())
    assert layer.row_ptr[2] == layer.row_ptr[1]  # the empty parent has no rows


def test_compiled_expansion_gives_each_beam_entry_the_blocks_scores_bit_for_bit() -> None:
    """The kernel of the beam search (``_expand``) against ``ScoringLayer.scores`` per entry: the same
    float32 sums (same order), the path's score multiplied in, no room for an empty slot, padding
    after a row's last child, and a parent with an empty block scoring its children 0 (before the
    transform)."""
    W, ptr = _layer_case(300, [4, 1, 7, 3, 5], density=0.05, seed=0)
    W = sp.csc_matrix(W.multiply(np.isin(np.arange(W.shape[1]), [4], invert=True)[None, :]))
    W.eliminate_zeros()  # parent 1's block is empty
    X = sp.random(12, 300, density=0.1, random_state=1, dtype=np.float32, format="csr")
    layer = ScoringLayer(W, ptr)
    rng = np.random.default_rng(2)
    beam_idx = np.array([rng.permutation(5)[:3] for _ in range(12)], dtype=np.int64)
    beam_idx[[0, 5], 2] = -1  # slots a short beam left empty
    beam_score = rng.uniform(0.1, 1.0, size=beam_idx.shape).astype(np.float32)
    beam_score[beam_idx < 0] = -np.inf
    cand_idx, cand_score = _expand(X, layer, beam_idx, beam_score, "l6-hinge")
    sizes = np.diff(ptr)
    assert cand_idx.shape == cand_score.shape == (12, max(sizes[r[r >= 0]].sum() for r in beam_idx))
    for i in range(12):
        at = 0  # the row's entries' children lie one after another, in beam order
        for slot in range(3):
            p = int(beam_idx[i, slot])
            if p < 0:
                continue
            m = int(sizes[p])
            want = post_process(layer.scores(X[[i]], p)[0], "l6-hinge") * beam_score[i, slot]
            assert cand_idx[i, at : at + m].tolist() == list(range(int(ptr[p]), int(ptr[p + 1])))
            assert np.array_equal(cand_score[i, at : at + m], want.astype(np.float32))
            at += m
        assert (cand_idx[i, at:] == -1).all() and np.isneginf(cand_score[i, at:]).all()


def test_a_beam_wider_than_its_layer_carries_no_padded_slots_down() -> None:
    """Three nodes under a beam of 10: the next layer scores 3 blocks per row, not 10 (mostly padding,
    the memory of a small tree's prediction), and every child of the 3 is still scored."""
    W0, ptr0 = _layer_case(200, [3], density=0.2, seed=5)
    W1, ptr1 = _layer_case(200, [5, 5, 5], density=0.2, seed=6)
    X = sp.random(20, 200, density=0.1, random_state=7, dtype=np.float32, format="csr")
    layers = [ScoringLayer(W0, ptr0), ScoringLayer(W1, ptr1)]
    cand_idx, cand_score = _beam_chunk(X, layers, 10, "l6-hinge")
    assert cand_idx.shape == (20, 3 * 5)
    assert all(sorted(row.tolist()) == list(range(15)) for row in cand_idx)
    assert np.isfinite(cand_score).all()


def test_a_shared_layer_scores_the_same_from_threads_and_after_pickling() -> None:
    # the gain shards share one ScoringLayer across threads (local) or processes (Ray)
    W, ptr = _layer_case(500, [6] * 40, density=0.05, seed=3)
    X = sp.random(64, 500, density=0.05, random_state=4, dtype=np.float32, format="csr")
    layer = ScoringLayer(W, ptr)
    expected = [(X @ W[:, ptr[p] : ptr[p + 1]]).toarray() for p in range(40)]

    def all_scores(lay: ScoringLayer) -> list[np.ndarray]:
        return [lay.scores(X, p) for p in range(40) for _ in range(5)][::5]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: all_scores(layer), range(8)))
    results.append(all_scores(pickle.loads(pickle.dumps(layer))))
    for got in results:
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)

def test_memory_follows_the_weights_not_parents_times_features() -> None:
    n_features, n_parents = 200_000, 2_000
    W, ptr = _layer_case(n_features, [3] * n_parents, density=2e-5, seed=2)
    layer = ScoringLayer(W, ptr)
    kept = layer.rows.data.nbytes + layer.rows.indices.nbytes + layer.rows.indptr.nbytes
    kept += layer.features.nbytes + layer.row_ptr.nbytes
    per_parent_csr = n_parents * (n_features + 1) * 4  # what one CSR row pointer per parent costs
    assert kept < 40 * W.nnz + 16 * n_parents < per_parent_csr / 50


@pytest.mark.parametrize("kind", [k for k in POST_PROCESSORS if k.endswith("-hinge")])
def test_lp_hinge_post_processors_follow_their_power(kind: str) -> None:
    """'lp-hinge' is exp(-max(0, 1 - z)^p): 1 at and above the margin, e^-1 at z = 0."""
    p = int(kind[1:-6])
    z = np.linspace(-2, 2, 41)
    np.testing.assert_allclose(post_process(z, kind), np.exp(-(np.maximum(0, 1 - z) ** p)))
    assert post_process(np.array([1.5]), kind)[0] == 1.0


@pytest.mark.parametrize("kind", POST_PROCESSORS)
def test_post_processing_in_place_gives_the_same_numbers(kind: str) -> None:
    """The beam transforms its candidate block in place: bit for bit the expression's values, float32
    in, float32 out, and the block's memory reused."""
    z = np.random.default_rng(8).normal(0, 2, size=(37, 101)).astype(np.float32)
    z[0, :3] = [-np.inf, 1.0, 40.0]
    hinge, sigmoid = int(kind[1:-6]) if kind.endswith("-hinge") else 0, not kind.endswith("-hinge")
    with np.errstate(over="ignore"):
        want = 1.0 / (1.0 + np.exp(-z)) if sigmoid else np.exp(-(np.maximum(0.0, 1.0 - z) ** hinge))
        block = z.copy()
        got = post_process(block, kind, in_place=True)
    assert got is block and got.dtype == np.float32
    assert np.array_equal(got, want) and np.array_equal(post_process(z, kind), want)


@pytest.mark.parametrize("kind", [k for k in POST_PROCESSORS if k.endswith("-hinge")])
def test_the_tie_break_orders_scores_past_the_margin_and_moves_no_other(kind: str) -> None:
    """With ``tie_break`` the lp-hinge keeps rising past the margin (float32 scores strictly increase
    in z up to margins of ~10, where the plain hinge is 1 from the margin on), stays in [0, 1],
    moves no score by more than 0.3 %, and gives the same numbers in place over several slices."""
    from xmc.core.predict import _SLICE_ROWS

    z = np.concatenate([np.linspace(-0.5, 0.9, 15), np.linspace(1, 9, 40)]).astype(np.float32)
    plain, broken = post_process(z, kind), post_process(z, kind, tie_break=True)
    assert (plain[z >= 1] == 1.0).all() and (np.diff(broken) > 0).all()
    assert (broken <= plain).all() and (broken >= 0.997 * plain).all()
    assert post_process(np.array([-np.inf, np.inf], np.float32), kind, tie_break=True).tolist() == [0.0, 1.0]
    block = np.random.default_rng(3).normal(0, 2, size=(2 * _SLICE_ROWS + 7, 5)).astype(np.float32)
    want = post_process(block, kind, tie_break=True)
    got = post_process(block, kind, in_place=True, tie_break=True)
    assert got is block and np.array_equal(got, want)


def test_prediction_ranks_saturated_labels_by_margin_and_the_fits_matching_by_index() -> None:
    """Labels 0 and 1 both clear their margin (z 1.5 and 3): prediction puts label 1 first, where the
    flat hinge tied them and the index put label 0 first. Clusters 0 and 1 both clear theirs too: the
    fit's matching keeps index order (its measured default), so a beam of one keeps cluster 0."""
    from xmc.core.predict import match, predict
    from xmc.core.tree import LabelTree
    from xmc.params import PredictParams

    tree = LabelTree((np.array([0, 0]), np.array([0, 0, 1])), np.array([0, 1, 2]), 3)
    X = sp.csr_matrix(np.array([[1.0, 0.0]], dtype=np.float32))  # + the bias column (weight row 2)
    matcher = sp.csc_matrix(np.array([[2.0, 6.0], [0, 0], [0, 0]], dtype=np.float32))
    rankers = sp.csc_matrix(np.array([[1.5, 3.0, -4.0], [0, 0, 0], [0, 0, 0]], dtype=np.float32))
    params = PredictParams(beam_size=2, topk=2)
    pred = predict(X, tree, [matcher, rankers], params, bias=1.0).toarray()[0]
    assert pred[1] > pred[0] > 0.99 and pred[2] == 0.0
    assert match(X, tree, [matcher], params, bias=1.0, keep=1).toarray().tolist() == [[1.0, 0.0]]


def test_topk_dense_breaks_ties_at_the_boundary_by_index() -> None:
    """Ten candidates tied at the top: the k kept are the k lowest indices whatever k, so a top-1 and
    the first of a top-10 agree (the tree alone and the hybrid ask for different k)."""
    from xmc.core.sparse import topk_dense

    rng = np.random.default_rng(0)
    idx = np.tile(rng.permutation(40), (50, 1))
    vals = np.where(idx % 4 == 0, 1.0, rng.random((50, 40)) * 0.5)  # labels 0, 4, ..., 36 tie at 1.0
    for k in (1, 3, 10):
        top, got = topk_dense(vals, idx, k)
        assert (top == np.arange(0, 4 * k, 4)).all() and (got == 1.0).all()
    top, _ = topk_dense(vals, idx, 12)
    assert (top[:, :10] == np.arange(0, 40, 4)).all()


@pytest.mark.parametrize("n_trees", [1, 2])
def test_prediction_in_chunks_on_threads_is_the_one_thread_prediction(toy, n_trees: int) -> None:  # type: ignore[no-untyped-def]
    """``predict(executor=...)`` maps chunks of rows (split per tree of an ensemble) over the
    executor's threads: the same top-k, bit for bit, as one thread, with a short last chunk."""
    from xmc import LocalExecutor, XMCParams
    from xmc.core.fit import fit

    X, Y = toy
    model = fit(X, Y, XMCParams().replace(max_leaf_size=4, n_trees=n_trees, chunk_size=30))
    units: list[int] = []

    class Counting(LocalExecutor):
        def map(self, fn, shared, items, *, desc=""):  # type: ignore[no-untyped-def]
            units.append(len(items))
            return super().map(fn, shared, items, desc=desc)

    alone = model.predict(X, topk=5)
    threaded = model.predict(X, topk=5, executor=Counting(show_progress=False, threads=2))
    chunk = 30 // n_trees
    assert X.shape[0] % chunk != 0 and units == [-(-X.shape[0] // chunk)]
    assert threaded.shape == alone.shape and (threaded != alone).nnz == 0 and alone.nnz == 5 * X.shape[0]
