"""Parameters of the dense component (PRIME) of a hybrid model: part of ``xmc.params``, which
re-exports them and composes them into ``XMCParams``; kept apart so each file fits in a head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from xmc.errors import require

DenseKind = Literal["none", "prime"]
DENSE_KINDS: tuple[str, ...] = ("none", "prime")


@dataclass(frozen=True)
class DenseParams:
    """The dense component (PRIME: an encoder and label prototypes, ``xmc.core.dense``), fused with the tree.

    Defaults chosen on hashed validation splits of the training data of Bibtex and debian-deps
    (bench/results/prime.md): each figure there names the split it was measured on.
    """

    dense: DenseKind = "none"
    """none: the label tree alone. prime: add a dense encoder and label prototypes; their scores are fused
    with the tree's by a weight fitted on the held-out rows (fusion_fraction)."""
    dense_dim: int = 512
    """Width of the document embedding and of every prototype (Bibtex validation P@1 59.1 at 512 vs 57.1 at
    256)."""
    dense_epochs: int = 20
    """Passes over the training rows; label centroids are refreshed before each."""
    dense_patience: int = 0
    """Epochs without a better held-out score before training stops (0 = run every epoch). The best epoch's
    network (held-out (P@1 + P@5) / 2, mean of 3 epochs) is kept either way: pypi-tags test dense P@1 40.22 ->
    43.66, Bibtex 60.68 -> 60.72. Patience 5 stopped Bibtex at epoch 14 (59.32): the one-cycle schedule's last
    epochs still gain."""
    dense_batch_size: int = 128
    """Documents per step; the batch's labels are each other's negatives."""
    dense_lr: float = 0.003
    """Peak learning rate of the one-cycle schedule (Adam; sparse Adam for the embedding rows)."""
    feature_dropout: float = 0.4
    """Share of each training document's features dropped per step (Bibtex validation P@1 +2.3 at 0.3)."""
    margin_min: float = 0.3
    """Smallest margin of the triplet loss; = margin_max, a fixed margin (held-out dense P@1 / P@5 against
    PRIME's dynamic 0.1: debian-deps +1.63 / +0.86, pypi-tags +0.70 / +0.89, Bibtex -0.60 / +0.97)."""
    margin_max: float = 0.3
    """Largest margin; the margin of a pair is the positive-negative gap clamped to [min, max] (PRIME:
    0.3)."""
    n_negatives: int = 50
    """Hardest in-batch negatives per document in the loss."""
    softmax_tau: float = 0.0
    """Temperature softmax-weighting the violating negatives (PRIME: 0.1; 0 = equal weights)."""
    dual_loss: bool = True
    """Also apply the loss label -> documents (each prototype against the batch's documents)."""
    label_text: bool = False
    """Label names through the encoder's token embeddings (debian-deps held-out: P@1 -0.9, P@5 +1.1)."""
    centroids: bool = True
    """Each prototype starts from its label's centroid (mean embedding of its training documents)."""
    free_vectors: bool = True
    """A learnt free vector per label, plus a learnt bias (one more dimension of the inner product)."""
    prototype_layers: int = 0
    """Transformer layers of the Label Prototype Network over [text, centroid, free] (0 = their sum)."""
    cluster_batches: bool = False
    """Batches of documents whose labels share a tree cluster (in-batch negatives are confusable labels)."""
    sense_prototypes: bool = False
    """One prototype per label copy of the tree, its centroid over the documents routed to that copy."""
    fusion_keeps: int = 1
    """The tree's best this many labels keep their ranks in the hybrid; the fusion ranks the rest (0: all).
    Free fusion's held-out P@1 gains did not carry to the test splits, its P@5 gains did
    (docs/performance.md)."""
    refit_trees: bool = True
    """Once the fusion is fitted on the held-out rows (fusion_fraction), train the trees again on every row:
    the hybrid then ranks first what `xmc train` without --dense would (held-out rows cost debian-deps' tree
    0.6 test P@1). Not with sense_prototypes (they are the copies of the first trees)."""
    fusion_fraction: float = 0.1
    """Rows held out (when validation_fraction is 0) to fit the fusion and the prior; both parts train on the
    rest."""
    dense_workers: int = 1
    """Data-parallel training processes (>= 2: Ray Train, DDP over gloo on CPU, NCCL on GPU)."""

    def __post_init__(self) -> None:
        require(self.dense in DENSE_KINDS, "dense", self.dense, f"use one of {DENSE_KINDS}")
        require(self.dense_patience >= 0, "dense_patience", self.dense_patience, "use >= 0 (0 = every epoch)")
        for name in ("dense_dim", "dense_epochs", "dense_batch_size", "n_negatives", "dense_workers"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "use an integer >= 1")
        require(self.dense_lr > 0, "dense_lr", self.dense_lr, "use a rate > 0, e.g. 0.003")
        require(0 <= self.feature_dropout < 1, "feature_dropout", self.feature_dropout,
                "use a share in [0, 1)")
        require(0 <= self.margin_min <= self.margin_max, "margin_min", self.margin_min,
                 "use 0 <= margin_min <= margin_max")
        require(self.softmax_tau >= 0, "softmax_tau", self.softmax_tau, "use >= 0 (0 = no weighting)")
        require(0 <= self.prototype_layers <= 4, "prototype_layers", self.prototype_layers, "use 0..4")
        require(0 <= self.fusion_keeps <= 20, "fusion_keeps", self.fusion_keeps,
                "use 0..20 (0 = fuse every rank)")
        require(0 < self.fusion_fraction < 0.5, "fusion_fraction", self.fusion_fraction,
                 "use a share in (0, 0.5), e.g. 0.1")
        require(self.label_text or self.centroids or self.free_vectors, "free_vectors", self.free_vectors,
                 "a prototype needs at least one of label_text, centroids, free_vectors")

    def held_out_fraction(self, validation_fraction: float) -> float:
        """The held-out share a model with this dense part trains beside (the tree's own, if set)."""
        if self.dense == "none":
            return validation_fraction
        return validation_fraction or self.fusion_fraction
