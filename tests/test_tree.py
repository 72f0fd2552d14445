from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from xmc.core.sparse import normalize_rows
from xmc.core.splits import Lloyd, NodeRows, row_ranges, spherical_kmeans, top_half
from xmc.core.tree import LabelTree, build_tree, pifa, tree_depth
from xmc.params import TreeParams


def test_pifa_by_hand() -> None:
    X = sp.csr_matrix(np.array([[3, 0], [0, 4], [3, 4]], np.float32))
    Y = sp.csr_matrix(np.array([[1, 0], [1, 1], [0, 1]], np.float32))
    Z = pifa(X, Y).toarray()
    np.testing.assert_allclose(Z, [[0.6, 0.8], [3 / np.sqrt(73), 8 / np.sqrt(73)]], rtol=1e-6)


def test_depth() -> None:
    assert tree_depth(159, 100) == 1 and tree_depth(159, 16) == 4
    assert tree_depth(1, 100) == 0 and tree_depth(3, 1) == 1


@pytest.mark.parametrize(
    ("n_labels", "leaf", "branch"), [(159, 100, 16), (159, 16, 16), (300, 4, 4), (5, 1, 2)]
)
def test_balanced_deterministic_contiguous(n_labels: int, leaf: int, branch: int) -> None:
    rng = np.random.default_rng(0)
    Z = normalize_rows(sp.random(n_labels, 30, density=0.3, random_state=rng, dtype=np.float32).tocsr())
    params = TreeParams(branching_factor=branch, max_leaf_size=leaf, seed=3, clustering="balanced")
    tree = build_tree(Z, params)
    again = build_tree(Z, params)
    assert all(np.array_equal(a, b) for a, b in zip(tree.parents, again.parents, strict=True))
    assert np.array_equal(tree.copy_label, again.copy_label)
    assert sorted(tree.copy_label) == list(range(n_labels))  # every label exactly once
    sizes = np.bincount(tree.parents[-1])
    assert sizes.max() - sizes.min() <= 1  # balanced leaves
    # the bound holds unless it would need empty leaves (max_leaf_size 1 with L not a power of 2)
    assert sizes.max() <= max(leaf, int(np.ceil(n_labels / 2 ** np.floor(np.log2(n_labels)))))
    for t in range(1, tree.n_layers - 1):
        assert np.bincount(tree.parents[t]).max() <= branch
    C = tree.label_cluster_matrix()
    assert C.shape == (n_labels, tree.n_clusters) and np.all(C.sum(1) == 1)


def test_layer_targets_follow_ancestors() -> None:
    # 4 labels, 2 leaves: labels {0, 2} in leaf 0, {1, 3} in leaf 1.
    tree = LabelTree((np.array([0, 0]), np.array([0, 0, 1, 1])), np.array([0, 2, 1, 3]), 4)
    Y = sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0]], np.float32))
    top, leaf = tree.layer_targets(Y)
    assert top.toarray().tolist() == [[1, 0], [0, 1], [0, 0]]
    assert leaf.toarray().tolist() == [[0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]


def test_tree_validation() -> None:
    with pytest.raises(ValueError, match="sorted by parent"):
        LabelTree((np.array([0, 0]), np.array([1, 0])), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="out of range"):
        LabelTree((np.array([0, 0]), np.array([0, 2])), np.array([0, 1]), 2)


@pytest.mark.parametrize("n", [2, 3, 7, 64, 501])
def test_top_half_is_the_stable_sort_split(n: int) -> None:
    # scores with many exact ties, zeros among them (labels without instances score 0)
    rng = np.random.default_rng(n)
    for _ in range(20):
        score = np.round(rng.standard_normal(n), 1) * (rng.random(n) < rng.random())
        order = np.lexsort((np.arange(n), -score))  # by score desc, ties by row
        expected = np.ones(n, dtype=np.int8)
        expected[order[: (n + 1) // 2]] = 0
        assert np.array_equal(top_half(score), expected)


def test_node_rows_keep_only_the_node_columns() -> None:
    rng = np.random.default_rng(0)
    Z = sp.random(12, 40, density=0.1, random_state=rng, dtype=np.float32).tocsr()
    order = rng.permutation(12)
    rows = NodeRows(Z, order)
    for start, stop in [(0, 5), (5, 12), (3, 4)]:
        local = rows.node(start, stop)
        full = Z[order[start:stop]].toarray()
        used = np.flatnonzero(np.abs(full).sum(0))
        assert local.shape == (stop - start, len(used))
        np.testing.assert_array_equal(local.toarray(), full[:, used])


def grouped_embeddings(sizes: list[int], dim: int = 60, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """Unit rows in groups of the given sizes, group g on its own block of features (plus a
    little shared noise), and each row's group."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(len(sizes)), sizes)
    block = dim // len(sizes)
    Z = rng.random((len(group), dim)) * 0.05
    for g in range(len(sizes)):
        Z[group == g, g * block:(g + 1) * block] += rng.random((sizes[g], block))
    return normalize_rows(sp.csr_matrix(Z, dtype=np.float32)), group


def test_kmeans_clusters_take_the_sizes_of_the_data() -> None:
    # 70 and 30 labels of two topics, one level of width 2 (leaf 50): k-means keeps each topic
    # whole where balanced 2-means must cut 50 / 50
    Z, group = grouped_embeddings([70, 30])
    for clustering, expected in (("kmeans", [30, 70]), ("balanced", [50, 50])):
        tree = build_tree(Z, TreeParams(max_leaf_size=50, clustering=clustering))
        leaf = np.empty(100, np.int64)
        leaf[tree.copy_label] = tree.parents[-1]
        assert sorted(np.bincount(leaf).tolist()) == expected
        if clustering == "kmeans":  # each leaf is one topic
            assert all(len(np.unique(group[leaf == k])) == 1 for k in range(tree.n_clusters))


@pytest.mark.parametrize(("n_labels", "leaf", "branch", "cap"), [(300, 4, 4, 2.0), (159, 16, 16, 1.0),
                                                                  (1000, 10, 8, 2.0)])
def test_kmeans_tree_valid_deterministic_and_capped(n_labels: int, leaf: int, branch: int,
                                                     cap: float) -> None:
    rng = np.random.default_rng(1)
    Z = normalize_rows(sp.random(n_labels, 40, density=0.2, random_state=rng, dtype=np.float32).tocsr())
    Z = sp.csr_matrix(sp.diags((np.arange(n_labels) % 10 != 0).astype(np.float32)) @ Z)  # labels 0, 10, ...:
    Z.eliminate_zeros()  # no instance, an empty embedding
    params = TreeParams(branching_factor=branch, max_leaf_size=leaf, seed=2, clustering="kmeans",
                        kmeans_leaf_cap=cap)
    tree, again = build_tree(Z, params), build_tree(Z, params)
    assert all(np.array_equal(a, b) for a, b in zip(tree.parents, again.parents, strict=True))
    assert np.array_equal(tree.copy_label, again.copy_label)
    assert sorted(tree.copy_label) == list(range(n_labels))
    assert tree.n_layers == len(build_tree(Z, TreeParams(branching_factor=branch, max_leaf_size=leaf,
                                                         clustering="balanced")).parents)  # same depth
    sizes = np.bincount(tree.parents[-1], minlength=tree.n_clusters)
    assert sizes.min() >= 1 and sizes.max() <= int(np.ceil(cap * leaf))
    assert sizes.max() > sizes.min()  # not cut into equal leaves
    empty = np.bincount(tree.parents[-1][np.isin(tree.copy_label, np.arange(0, n_labels, 10))],
                        minlength=tree.n_clusters)
    assert empty.max() <= np.ceil(empty.sum() / 2)  # empty embeddings spread, not piled in one leaf
    for t in range(1, tree.n_layers - 2):  # the leaves' layer may hold more: fat leaves were halved
        assert np.bincount(tree.parents[t]).max() <= branch


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_row_ranges_cover_every_row_once_in_shares_of_the_stored_values(parts: int) -> None:
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 40, size=500)
    lengths[100:140] = 0  # a run of empty rows
    indptr = np.r_[0, np.cumsum(lengths)]
    ranges = row_ranges(indptr, parts)
    assert ranges[0][0] == 0 and ranges[-1][1] == 500 and len(ranges) <= parts
    assert all(a < b for a, b in ranges)
    assert all(b == c for (_, b), (c, _) in zip(ranges[:-1], ranges[1:], strict=True))  # consecutive
    share = np.array([indptr[b] - indptr[a] for a, b in ranges])
    assert share.max() - share.min() <= 2 * lengths.max()  # about equal: each cut within a row


@pytest.mark.parametrize("cores", [2, 3, 5])
def test_lloyd_passes_on_several_cores_equal_the_one_core_passes_bit_for_bit(cores: int) -> None:
    rng = np.random.default_rng(4)
    Z = normalize_rows(sp.random(3000, 60, density=0.1, random_state=rng, format="csr", dtype=np.float32))
    one, many = Lloyd(Z, 8, cores=1), Lloyd(Z, 8, cores=cores, min_work=0)
    assert one.pool is None and many.pool is not None and len(many.row_ranges) == cores
    centroids = rng.random((60, 8))
    centroids /= np.linalg.norm(centroids, axis=0)
    assign = {run: np.full(3000, -2, np.int64) for run in ("one", "many")}
    cent = {run: centroids.copy() for run in ("one", "many")}
    try:
        for _ in range(3):  # passes from the same start agree at every step, changed counts too
            changed = one.nearest(cent["one"], assign["one"])
            assert many.nearest(cent["many"], assign["many"]) == changed > 0
            assert np.array_equal(assign["one"], assign["many"])
            one.centroids(assign["one"], cent["one"], np.empty_like(centroids))
            many.centroids(assign["many"], cent["many"], np.empty_like(centroids))
            assert np.array_equal(cent["one"], cent["many"])
    finally:
        many.close()
    empty = np.diff(Z.indptr) == 0
    assert (assign["one"][empty] == -1).all() and (assign["one"][~empty] >= 0).all()
    members = np.eye(8)[assign["one"]] * (assign["one"] >= 0)[:, None]  # the centroids by dense algebra
    sums = Z.T.toarray().astype(np.float64) @ members
    norms = np.linalg.norm(sums, axis=0)
    assert np.allclose(cent["one"][:, norms > 0], (sums / np.where(norms > 0, norms, 1))[:, norms > 0])


def test_spherical_kmeans_is_the_same_on_one_core_and_on_many() -> None:
    Z, _ = grouped_embeddings([400, 300, 200, 100])
    for seed in range(3):
        one = spherical_kmeans(Z, 4, np.random.default_rng(seed), 20)
        with pytest.MonkeyPatch.context() as patch:  # every node on the pool, however small
            patch.setattr("xmc.core.splits.PARALLEL_WORK", 0)
            patch.setattr("xmc.core.splits.available_cores", lambda: 3)
            many = spherical_kmeans(Z, 4, np.random.default_rng(seed), 20)
        assert np.array_equal(one, many) and len(np.unique(one)) == 4
