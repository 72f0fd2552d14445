"""The encoder and the Label Prototype Network (torch modules).

Encoder: a TF-IDF row is a bag of feature ids weighted by their values; an embedding bag sums the
rows of a (D x d) table, a residual MLP (its last layer starts at zero, so training starts from the
plain bag) refines it, and the output is unit-norm.

Prototype of label l: the sum (``prototype_layers`` = 0) or a small transformer over up to three
d-vectors, each switchable for the ablations:
  - text: the label's name featurized like a document, through the encoder's own embedding table;
  - centroid: the unit mean embedding of the label's training documents (refreshed per epoch, no
    gradient: it moves with the encoder);
  - free: a learnt vector.
The prototype is unit-norm, then extended by a learnt bias (``free_vectors``): the score is an inner
product ``[e, 1] . [p, b_l]``, so retrieval stays an exact maximum inner product search.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from xmc.params import DenseParams


def bag_inputs(indices: torch.Tensor, indptr: torch.Tensor, values: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A CSR block as EmbeddingBag's (ids, offsets, per-sample weights)."""
    return indices.long(), indptr[:-1].long(), values.float()


class BagEncoder(nn.Module):
    """Weighted embedding bag + residual MLP -> unit vector."""

    def __init__(self, n_features: int, dim: int, sparse: bool) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(n_features, dim, mode="sum", sparse=sparse)
        nn.init.normal_(self.embedding.weight, std=dim ** -0.5)
        last = nn.Linear(dim, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), last)

    def bag(self, indices: torch.Tensor, indptr: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        ids, offsets, weights = bag_inputs(indices, indptr, values)
        return self.embedding(ids, offsets, per_sample_weights=weights)

    def forward(self, indices: torch.Tensor, indptr: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        h = self.bag(indices, indptr, values)
        return F.normalize(h + self.mlp(h), dim=-1)


class PrototypeNetwork(nn.Module):
    """Label text, centroid and free vector -> one unit prototype (+ bias) per label."""

    def __init__(self, n_labels: int, dim: int, params: DenseParams, sparse: bool) -> None:
        super().__init__()
        self.params = params
        self.n_labels = n_labels
        # only what a forward pass reads is a parameter: DDP fails on parameters that get no gradient
        self.free = nn.Embedding(n_labels, dim, sparse=sparse) if params.free_vectors else None
        self.bias = nn.Embedding(n_labels, 1, sparse=sparse) if params.free_vectors else None
        if self.free is not None and self.bias is not None:
            nn.init.normal_(self.free.weight, std=0.01)
            nn.init.zeros_(self.bias.weight)
        self.kind = nn.Parameter(torch.zeros(3, dim)) if params.prototype_layers else None
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(params.prototype_layers))

    def forward(self, labels: torch.Tensor, text: torch.Tensor | None, centroid: torch.Tensor | None
                ) -> torch.Tensor:
        """(len(labels) x (d + 1)) prototypes with their bias column."""
        parts = [v for v in (text, centroid) if v is not None]
        if self.free is not None:
            parts.append(self.free(labels))
        base = torch.stack(parts).sum(0)
        if self.kind is not None:
            seq = torch.stack(parts, 1) + self.kind[: len(parts)]
            for layer in self.layers:
                seq = layer(seq)
            base = base + seq.mean(1)
        bias = self.bias(labels) if self.bias is not None else torch.zeros_like(base[:, :1])
        return torch.cat([F.normalize(base, dim=-1), bias], dim=1)


def with_one(E: torch.Tensor) -> torch.Tensor:
    """Document embeddings extended by the constant 1 that meets each prototype's bias."""
    return torch.cat([E, torch.ones_like(E[:, :1])], dim=1)


class PrimeNet(nn.Module):
    """Encoder + prototype network, so one module (and one DDP wrapper) holds every parameter."""

    def __init__(self, n_features: int, n_labels: int, params: DenseParams, sparse: bool) -> None:
        super().__init__()
        self.encoder = BagEncoder(n_features, params.dense_dim, sparse)
        self.prototypes = PrototypeNetwork(n_labels, params.dense_dim, params, sparse)

    def forward(self, x: tuple[torch.Tensor, ...], labels: torch.Tensor,
                text: tuple[torch.Tensor, ...] | None, centroid: torch.Tensor | None,
                share: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Scores (documents x labels) of a batch against the prototypes of ``labels``; ``share``
        turns a data-parallel rank's embeddings into the whole global batch's (``train.gathered``)."""
        E = self.encoder(*x)
        E = with_one(share(E) if share is not None else E)
        t = self.encoder.bag(*text) if text is not None else None
        return E @ self.prototypes(labels, t, centroid).T
