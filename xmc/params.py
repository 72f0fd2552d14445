"""Typed, frozen parameters: the one source of every default.

The CLI builds its flags from these dataclasses (``--max-leaf-size`` for ``max_leaf_size``), JSON configs
are validated against them, a model saves them with its weights; a bad value fails on creation. The dense
component's ``DenseParams`` live in ``xmc.params_dense`` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from xmc.errors import ParamError, require
from xmc.params_dense import DENSE_KINDS as DENSE_KINDS
from xmc.params_dense import DenseKind as DenseKind
from xmc.params_dense import DenseParams

Negatives = Literal["tfn", "tfn+man"]
PostProcessor = Literal["l2-hinge", "l3-hinge", "l4-hinge", "l5-hinge", "l6-hinge", "l8-hinge", "sigmoid"]
CopyMerge = Literal["max", "mean"]
Device = Literal["auto", "cpu", "cuda"]
Algorithm = Literal["auto", "dual-cd", "newton-cg"]

NEGATIVES: tuple[str, ...] = ("tfn", "tfn+man")
POST_PROCESSORS: tuple[str, ...] = get_args(PostProcessor)
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
COPY_MERGES: tuple[str, ...] = ("max", "mean")
ALGORITHMS: tuple[str, ...] = ("auto", "dual-cd", "newton-cg")
Clustering = Literal["balanced", "kmeans"]
CLUSTERINGS: tuple[str, ...] = get_args(Clustering)
FeatureWeightMeasure = Literal["kl", "entropy"]
FEATURE_WEIGHT_MEASURES: tuple[str, ...] = get_args(FeatureWeightMeasure)


@dataclass(frozen=True)
class TreeParams:
    """How the label tree is built (spherical k-means per level, or balanced 2-means, on PIFA embeddings)."""

    branching_factor: int = 32
    """Children per internal node of the matcher tree (a power of two: levels group 2-means splits). 32:
    validation P@1 +0.1 on debian-deps over 16 (64: no better), equal on Bibtex, fit +13 %."""
    max_leaf_size: int = 100
    """Most labels in a balanced leaf (the tree deepens until each fits; k-means: kmeans_leaf_cap x)."""
    kmeans_max_iter: int = 20
    """Lloyd iterations at most of each split (k-means stops earlier when no label moves)."""
    seed: int = 0
    """Seed of the k-means initialisation; the same seed gives the same tree."""
    n_trees: int = 1
    """Label trees in the ensemble, tree t from seed + t; their label scores are averaged (Parabel's
    ensemble). Each tree costs a full fit and a full prediction."""
    clustering: Clustering = "kmeans"
    """How a level splits a node's labels: 'kmeans' (spherical k-means to the level's width; xmc.core.splits)
    or 'balanced' (recursive 2-means, equal halves). kmeans, 6 validation splits of eight real sets: mean P@1
    +0.04, debian-deps' TF-IDF +0.18, no set lost; fit +20-34 % on debian-deps (docs/performance.md)."""
    kmeans_leaf_cap: float = 2.0
    """Under 'kmeans', a leaf of more than this x max_leaf_size labels is halved by balanced 2-means
    until none is: a leaf's rankers cost labels x rows (uncapped, debian-deps' rankers took 2.5x)."""

    def __post_init__(self) -> None:
        require(self.clustering in CLUSTERINGS, "clustering", self.clustering, f"use one of {CLUSTERINGS}")
        require(self.kmeans_leaf_cap >= 1 and math.isfinite(self.kmeans_leaf_cap), "kmeans_leaf_cap",
                self.kmeans_leaf_cap, "use a number >= 1")
        b = self.branching_factor
        require(b >= 2 and (b & (b - 1)) == 0, "branching_factor", b, "use a power of two >= 2, e.g. 16")
        require(self.max_leaf_size >= 1, "max_leaf_size", self.max_leaf_size, "use an integer >= 1")
        require(self.kmeans_max_iter >= 1, "kmeans_max_iter", self.kmeans_max_iter, "use >= 1")
        require(self.seed >= 0, "seed", self.seed, "use a non-negative integer")
        require(self.n_trees >= 1, "n_trees", self.n_trees, "use an integer >= 1 (1 = a single tree)")


@dataclass(frozen=True)
class SolverParams:
    """One-vs-rest L2-regularised squared-hinge (L2-loss SVM): dual coordinate descent on the CPU,
    batched Newton-CG in torch on a GPU."""

    cost: float = 0.5
    """SVM cost C: the loss's weight against the L2 regulariser (0.5: best on the real sets' validation)."""
    recurring_df: int = 0
    """> 0: C is divided by the mean share of a training row's squared norm on features in >= this many
    training rows (xmc.core.cost). Off: at 2, validation P@1 +0.42 on pypi-tags' TF-IDF, P@5 -0.34 / -0.36 on
    it and pypi-tags (docs/performance.md)."""
    label_cost_exponent: float = 0.0
    """g: the rankers of label l train with C_l = C (n_l / label_cost_reference)^g, n_l its positive rows
    in its leaf (xmc.core.cost.label_costs). Off: at -0.2, debian-deps -0.16 P@1 (docs/performance.md)."""
    label_cost_reference: float = 100.0
    """r: the positives at which a label's ranker keeps C under ``label_cost_exponent``."""
    row_cost_exponent: float = 0.25
    """g: training row i counts with C n_i^-g / mean(n^-g), n_i its labels (at least 1), in every layer
    (xmc.core.cost.row_costs): a row with many labels is a weaker witness of each. 0: every row counts with
    C. 0.25 against 0, eight real sets: mean P@1 +0.19, none lost, P@5 -0.01 to -0.19 (performance.md)."""
    feature_weight_exponent: float = 0.25
    """gamma: feature j is scaled by a weight in (0, 1] raised to gamma, from how its mass over the labels
    in the fitting rows differs from the labels' own (``feature_weight_measure``), and the rows normalised
    again, at fit and predict (xmc.core.feature_weights; the model stores the weights): a word that comes
    with every label in their usual proportions says little about any. 0: the features as given.
    0.25 ('kl') against 0, 12 validation splits of the nine real sets: mean P@1 +0.30 (Bibtex +1.48, its
    composite set +1.08, pypi-tags' TF-IDF +0.19), P@5 up on eight; debian-deps-2hop -0.12 +- 0.05, which
    every weighting loses a little; 0.35 loses it by -0.25 (docs/performance.md)."""
    feature_weight_measure: FeatureWeightMeasure = "kl"
    """What a feature's weight measures: 'kl', 1 - exp(-KL(q_j || p) / 2), its label mass q_j against
    the labels' share p of all mass; or 'entropy', 1 - H(q_j) / ln L, its spread over the L labels.
    'kl' at 0.25 against 'entropy' at 0.15: mean P@1 +0.14 (Bibtex +0.73; docs/performance.md)."""
    feature_pairs: int = 3
    """m: a row's m largest features also give their products as features (xmc.core.feature_pairs); 0: none.
    On the sets of 500 features +1.0-2.3 P@1; fit +58 % (4: +85 %; docs/performance.md)."""
    pair_weight: float = 0.5
    """Norm of a row's pair block beside its own features' (1), before the row is normalised again."""
    pair_max_features: int = 30000
    """Pairs only for inputs of at most this many features (0: any): on 38K+ features they paid nothing."""
    pair_max_row_features: float = 14.0
    """Pairs only where fitting rows hold at most this many features on average (0: any); 15+ lost."""
    pair_many_labels: float = 8.0
    """Rows of this many labels on average (0: never) use pair_max_row_features_many_labels instead."""
    pair_max_row_features_many_labels: float = 17.0
    """The row limit for rows of many labels (0: any): pairs paid there up to 16.7 features a row."""
    bias: float = 1.0
    """Value of the constant feature appended to every instance (its weight is the bias term)."""
    weight_threshold: float = 0.03
    """Weights with |w| below this are pruned (a sparse, fast model). 0.03 against PECOS's and omikuji's 0.1,
    6 validation splits of eight real sets: mean P@1 +0.10, Bibtex +0.29, no set lost; 2.5x the weights,
    prediction +40-60 %, fit +10-30 % (docs/performance.md)."""
    algorithm: Algorithm = "auto"
    """'dual-cd' (numba; the CPU's), 'newton-cg' (batched in torch; a GPU's), or 'auto' (by device)."""
    dual_tol: float = 0.3
    """Dual CD stops when the projected gradients' spread over a pass is at most this (liblinear's 0.1). 0.3:
    4 validation splits of 11 real sets, mean P@1 +0.04, none lost, fit -20-34 % on the tag sets."""
    dual_max_iter: int = 20
    """Passes over a leaf's rows per label at most (dual CD)."""
    solver_tol: float = 0.1
    """Newton stops per label at |g| <= tol * max(min(n_pos, n_neg), 1) / n * |g(0)| (liblinear's test)."""
    max_newton_iter: int = 30
    """Newton steps per cluster at most."""
    max_cg_iter: int = 50
    """Conjugate-gradient steps per Newton step at most."""
    negatives: Negatives = "tfn+man"
    """A node's negatives: 'tfn' (its siblings' instances) or 'tfn+man' (also those the matcher sends it)."""
    man_top: int = 3
    """Matcher-aware negatives come from the best this many nodes of each instance's beam (0 = the whole
    beam)."""
    device: Device = "auto"
    """Where torch runs the solver: 'cuda' when available under 'auto'."""
    dtype: Literal["float32", "float64"] = "float32"
    """Solver precision; float32 is enough for the accuracy of a linear SVM and twice as fast."""

    def __post_init__(self) -> None:
        require(self.cost > 0 and math.isfinite(self.cost), "cost", self.cost, "use a positive number")
        require(self.bias >= 0 and math.isfinite(self.bias), "bias", self.bias,
                "use >= 0 (0 disables the bias)")
        require(self.weight_threshold >= 0, "weight_threshold", self.weight_threshold, "use >= 0")
        require(0 < self.solver_tol < 1, "solver_tol", self.solver_tol, "use a value in (0, 1), e.g. 0.1")
        require(self.algorithm in ALGORITHMS, "algorithm", self.algorithm, f"use one of {ALGORITHMS}")
        require(self.dual_tol > 0 and math.isfinite(self.dual_tol), "dual_tol", self.dual_tol, "use > 0")
        require(self.dual_max_iter >= 1, "dual_max_iter", self.dual_max_iter, "use >= 1")
        require(self.man_top >= 0, "man_top", self.man_top, "use >= 0 (0 = the whole beam)")
        require(math.isfinite(self.label_cost_exponent), "label_cost_exponent", self.label_cost_exponent,
                "use a finite number (0 = one C for every label)")
        require(self.label_cost_reference > 0 and math.isfinite(self.label_cost_reference),
                "label_cost_reference", self.label_cost_reference, "use a positive number")
        require(math.isfinite(self.row_cost_exponent), "row_cost_exponent", self.row_cost_exponent,
                "use a finite number (0 = every row counts with C)")
        require(self.feature_weight_exponent >= 0 and math.isfinite(self.feature_weight_exponent),
                "feature_weight_exponent", self.feature_weight_exponent,
                "use a number >= 0 (0 = features as given)")
        require(self.feature_pairs != 1 and self.feature_pairs >= 0, "feature_pairs", self.feature_pairs,
                "use 0 (none) or an integer >= 2")
        require(self.pair_weight > 0 and math.isfinite(self.pair_weight), "pair_weight", self.pair_weight,
                "use > 0")
        for name, zero in (("pair_max_features", "any"), ("pair_max_row_features", "any"),
                           ("pair_many_labels", "never"), ("pair_max_row_features_many_labels", "any")):
            require(0 <= getattr(self, name) < math.inf, name, getattr(self, name), f"use >= 0 (0: {zero})")
        require(self.feature_weight_measure in FEATURE_WEIGHT_MEASURES, "feature_weight_measure",
                self.feature_weight_measure, f"use one of {FEATURE_WEIGHT_MEASURES}")
        require(self.recurring_df >= 0, "recurring_df", self.recurring_df, "use >= 0 (0 = C as given)")
        require(self.max_newton_iter >= 1, "max_newton_iter", self.max_newton_iter, "use >= 1")
        require(self.max_cg_iter >= 1, "max_cg_iter", self.max_cg_iter, "use >= 1")
        require(self.negatives in NEGATIVES, "negatives", self.negatives, f"use one of {NEGATIVES}")
        require(self.device in DEVICES, "device", self.device, f"use one of {DEVICES}")
        require(self.dtype in ("float32", "float64"), "dtype", self.dtype, "use float32 or float64")


@dataclass(frozen=True)
class PredictParams:
    """How the beam search scores and keeps candidates."""

    beam_size: int = 10
    """Clusters kept per level of the beam search."""
    topk: int = 10
    """Labels returned per instance."""
    post_processor: PostProcessor = "l6-hinge"
    """Map from a linear score z to (0, 1]: 'lp-hinge' exp(-max(0, 1-z)^p) or 'sigmoid'; path scores
    multiply. l6: validation P@1 +0.25 on debian-deps and +0.07 on Bibtex over PECOS's l3."""
    chunk_size: int = 2048
    """Instances scored at once: bounds prediction memory (debian-deps: 775 MiB peak; 1,423 at 8192)."""
    copy_merge: CopyMerge = "max"
    """How the scores of a label's retrieved copies combine: 'max' or 'mean'."""

    def __post_init__(self) -> None:
        require(self.beam_size >= 1, "beam_size", self.beam_size, "use >= 1, e.g. 10")
        require(self.topk >= 1, "topk", self.topk, "use >= 1")
        require(self.post_processor in POST_PROCESSORS, "post_processor", self.post_processor,
                 f"use one of {POST_PROCESSORS}")
        require(self.chunk_size >= 1, "chunk_size", self.chunk_size, "use >= 1")
        require(self.copy_merge in COPY_MERGES, "copy_merge", self.copy_merge, f"use one of {COPY_MERGES}")


@dataclass(frozen=True)
class DisentangleParams:
    """Precision-gain reassignment rounds (shared/METHOD.md, "Disentanglement")."""

    rounds: int = 1
    """Alternation rounds R (0 = the single-partition baseline)."""
    max_copies: int = 2
    """lambda: most clusters a label may live in."""
    leaf_capacity: float = 2.0
    """A leaf may hold at most this times max_leaf_size copies (0 = no cap); bounds ranker cost."""
    min_gain: int = 2
    """A copy needs at least this many training instances of the label routed to the cluster."""
    min_gain_share: float = 0.15
    """... and at least this share of the label's positives: a copy must carry a sense of the label, not stray
    documents. 0.15 against 0.05, validation P@1 / P@5: pypi-tags +0.26 / -0.01, Bibtex +0.07 / -0.10 (6
    splits), debian-deps 0.00 / +0.07 (3); fits faster (fewer copies). 0.2 gained more on those (+0.32, +0.44)
    but lost 0.43 P@1 on bibtex-composite."""
    gain_beam_size: int = 1
    """Leaves kept per instance in the matching behind G (0 = beam_size). As many as the tree's leaves make
    every G[l, k] = n_l: no signal."""
    gain_search_beam: int = 0
    """Beam of the search that finds those leaves (0 = beam_size; at least gain_beam_size). A
    greedy search (1) compounds errors down a deep tree: at L = 100K (4 layers) it reached a
    quarter of the training pairs and piled labels into a few hub leaves (P@1 40.5 -> 32.9);
    the top leaf of a beam-10 search reached 91 % and the round kept P@1 (40.7)."""
    retrain_matcher: bool = True
    """Retrain the matcher on the new clusters each round (Bibtex: +0.7 P@1 over rankers only)."""
    validation_fraction: float = 0.0
    """Share of training rows held out to score rounds and stop early (0 = train on all, no early stop)."""

    def __post_init__(self) -> None:
        require(self.rounds >= 0, "rounds", self.rounds, "use >= 0 (0 = baseline)")
        require(self.max_copies >= 1, "max_copies", self.max_copies, "use >= 1, e.g. 2")
        require(self.leaf_capacity == 0 or self.leaf_capacity >= 1, "leaf_capacity", self.leaf_capacity,
                 "use 0 (no cap) or >= 1")
        require(self.gain_beam_size >= 0, "gain_beam_size", self.gain_beam_size, "use >= 0 (0 = beam_size)")
        require(self.gain_search_beam >= 0, "gain_search_beam", self.gain_search_beam,
                "use >= 0 (0 = beam_size)")
        require(self.min_gain >= 1, "min_gain", self.min_gain, "use >= 1")
        require(0 <= self.min_gain_share <= 1, "min_gain_share", self.min_gain_share, "use a share in [0, 1]")
        require(0 <= self.validation_fraction < 0.5, "validation_fraction", self.validation_fraction,
                 "use a share in [0, 0.5), e.g. 0.1")


EXECUTORS = ("local", "ray")
ExecutorKind = Literal["local", "ray"]
DATA_PLANES = ("auto", "driver", "shards")
DataPlane = Literal["auto", "driver", "shards"]


@dataclass(frozen=True)
class ExecutorParams:
    """Where work units run. Not a model parameter: any executor gives the same model."""

    executor: ExecutorKind = "local"
    """local: in-process; ray: Ray tasks (local Ray, or the cluster at ray_address)."""
    ray_address: str = ""
    """Ray cluster to join, e.g. ray://head:10001 or auto ('' = start a local Ray)."""
    num_workers: int = 0
    """Parallel Ray tasks, or the local executor's threads, to aim for (0 = CPUs / cpus_per_worker)."""
    cpus_per_worker: int = 1
    """CPUs each Ray task requests; torch inside it uses this many threads."""
    memory_per_worker_mb: int = 0
    """Memory each Ray task requests from the scheduler, in MiB (0 = no request)."""
    batches_per_worker: int = 2
    """Units are packed into about this many balanced batches per worker."""
    max_retries: int = 3
    """Times a task whose worker died is run again (units are idempotent)."""
    data_plane: DataPlane = "auto"
    """Where the training rows of a features bundle (``--data``) live. driver: loaded into this
    process. shards: read by the units from shard files and shuffled per cluster through work_dir,
    so the driver holds only what is sized by the labels (``xmc.core.sharded``). auto: shards with
    the ray executor, driver otherwise. Both give the same model."""
    work_dir: str = ""
    """Folder of the shards and shuffles of data_plane shards ('' = the system's temp folder); on a cluster,
    storage every node sees. A run's own subfolder is removed when it ends."""

    def shards_for_bundle(self) -> bool:
        """Whether a bundle's rows stay in shards (``data_plane`` resolved)."""
        return self.data_plane == "shards" or (self.data_plane == "auto" and self.executor == "ray")

    def __post_init__(self) -> None:
        require(self.executor in EXECUTORS, "executor", self.executor, f"use one of {EXECUTORS}")
        require(self.data_plane in DATA_PLANES, "data_plane", self.data_plane, f"use one of {DATA_PLANES}")
        for name in ("num_workers", "memory_per_worker_mb", "max_retries"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "use >= 0")
        for name in ("cpus_per_worker", "batches_per_worker"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "use >= 1")


@dataclass(frozen=True)
class XMCParams:
    """All parameters of a model. ``normalize_rows`` L2-normalises feature rows at fit and predict."""

    tree: TreeParams = field(default_factory=TreeParams)
    solver: SolverParams = field(default_factory=SolverParams)
    predict: PredictParams = field(default_factory=PredictParams)
    disentangle: DisentangleParams = field(default_factory=DisentangleParams)
    dense: DenseParams = field(default_factory=DenseParams)
    normalize_rows: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> XMCParams:
        """Build from a nested dict (as ``to_dict`` writes) or a flat one; unknown keys are errors."""
        if not isinstance(data, dict):
            raise ParamError(f"params must be a JSON object, got {type(data).__name__}")
        return cls().replace(**flatten(data))

    @classmethod
    def from_json(cls, path: str | Path) -> XMCParams:
        return cls.from_dict(read_json_object(path))

    def replace(self, **flat: Any) -> XMCParams:
        """Return a copy with flat field overrides (``max_leaf_size=16``), validated."""
        groups: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
        top: dict[str, Any] = {}
        for key, value in flat.items():
            group = FIELD_GROUP.get(key)
            if group is None:
                raise ParamError(f"unknown parameter {key!r}; known: {', '.join(sorted(FIELD_GROUP))}")
            if group == "":
                top[key] = value
            else:
                groups[group][key] = value
        new_groups = {
            name: dataclasses.replace(getattr(self, name), **coerce_fields(GROUPS[name], vals))
            for name, vals in groups.items()
        }
        return dataclasses.replace(self, **new_groups, **coerce_fields(XMCParams, top))


GROUPS: dict[str, type] = {
    "tree": TreeParams, "solver": SolverParams, "predict": PredictParams, "disentangle": DisentangleParams,
    "dense": DenseParams,
}
FIELD_GROUP: dict[str, str] = {f.name: g for g, cls in GROUPS.items() for f in fields(cls)}
FIELD_GROUP["normalize_rows"] = ""

T = TypeVar("T")


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A params file's JSON object; every params class reads its files through this one helper."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ParamError(f"{path}: not valid UTF-8 text (byte {e.start})") from None
    except RecursionError:
        raise ParamError(f"{path}: not valid JSON (nested too deeply)") from None
    except OSError as e:
        raise ParamError(f"{path}: cannot read the params file ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ParamError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None
    if not isinstance(data, dict):
        raise ParamError(f"{path}: a params file must hold a JSON object")
    return data


def flatten(data: dict[str, Any]) -> dict[str, Any]:
    """Nested ``{"tree": {...}}`` or flat ``{"max_leaf_size": ...}`` -> flat dict."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in GROUPS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def coerce_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Check JSON/CLI values against the field's declared type before the dataclass sees them."""
    types = {f.name: f.type for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        declared = str(types[key])
        if declared == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif declared == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif declared == "bool":
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ParamError(f"{key}={value!r} has the wrong type: expected {declared}")
        out[key] = value
    return out
