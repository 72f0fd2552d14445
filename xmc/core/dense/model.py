"""The dense part of a trained model: what prediction needs, as plain arrays (never pickle).

    embedding   (D x d)      the encoder's token table
    mlp_*       the encoder's residual MLP
    prototypes  (L x (d+1))  final unit prototypes with their bias column; the bias already holds
                             the label-frequency prior ``gamma * ln(1 + n_l)``
    copy_label  (C,)         optional (disentangled prototypes, ``xmc.core.dense.senses``): the
                             label of each prototype row; a label scores the max over its rows
    fusion      alpha (weight of the dense score), beta (its sharpness), gamma (the prior), and
                the tree's ranks kept (absent in bundles saved before it: 0, a free fusion)

In-batch negatives meet a label in proportion to its frequency, so a frequent label is pushed down
more often than it is pulled up (the sampling bias that logQ correction removes in retrieval). The
prior ``gamma * ln(1 + n_l)``, gamma fitted on held-out rows, puts it back: debian-deps validation
P@1 32.0 -> 62.8 after two epochs of the prototype loop (bench/results/prime.md).
Scoring is an exact maximum inner product over chunks of documents and of labels, so memory is
bounded by the chunk sizes, not by N x L.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from xmc.core.sparse import from_topk
from xmc.errors import BundleError

if TYPE_CHECKING:
    import torch

    from xmc.core.dense.net import PrimeNet

    Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

ARRAYS = ("embedding", "mlp_0_weight", "mlp_0_bias", "mlp_2_weight", "mlp_2_bias", "prototypes", "fusion")
FILE = "dense.npz"


@dataclass
class DenseModel:
    """Encoder weights, prototypes and fusion constants of a PRIME component."""

    arrays: dict[str, np.ndarray]

    @property
    def dim(self) -> int:
        return int(self.arrays["embedding"].shape[1])

    @property
    def n_features(self) -> int:
        return int(self.arrays["embedding"].shape[0])

    n_labels: int

    @property
    def row_label(self) -> np.ndarray:
        """The label of each prototype row (one row per label, or per label copy)."""
        if "copy_label" in self.arrays:
            return self.arrays["copy_label"].astype(np.int64)
        return np.arange(self.n_labels, dtype=np.int64)

    @property
    def alpha(self) -> float:
        return float(self.arrays["fusion"][0])

    @property
    def beta(self) -> float:
        return float(self.arrays["fusion"][1])

    @property
    def gamma(self) -> float:
        return float(self.arrays["fusion"][2])

    @property
    def kept(self) -> int:
        """The tree's best labels that keep their ranks in the hybrid (``xmc.core.dense.fusion.fuse``)."""
        fusion = self.arrays["fusion"]
        return int(fusion[3]) if len(fusion) > 3 else 0

    def with_fusion(self, alpha: float, beta: float, gamma: float, label_counts: np.ndarray,
                    kept: int = 0) -> DenseModel:
        """A copy whose bias column carries the prior gamma * ln(1 + n_l) (replacing any earlier one)."""
        arrays = dict(self.arrays)
        P = arrays["prototypes"].copy()
        P[:, -1] += (gamma - self.gamma) * np.log1p(label_counts[self.row_label]).astype(np.float32)
        arrays["prototypes"] = P
        arrays["fusion"] = np.array([alpha, beta, gamma, kept], dtype=np.float64)
        return DenseModel(arrays, self.n_labels)

    def embed(self, X: sp.csr_matrix, device: str = "cpu") -> np.ndarray:
        """Unit document embeddings extended by the constant 1 (N x (d + 1)), float32."""
        import torch

        W0, b0 = (torch.from_numpy(self.arrays[k]).to(device) for k in ("mlp_0_weight", "mlp_0_bias"))
        W2, b2 = (torch.from_numpy(self.arrays[k]).to(device) for k in ("mlp_2_weight", "mlp_2_bias"))
        table = torch.from_numpy(self.arrays["embedding"]).to(device)
        X = sp.csr_matrix(X, dtype=np.float32)
        with torch.no_grad():
            ids = torch.from_numpy(X.indices.astype(np.int64)).to(device)
            offsets = torch.from_numpy(X.indptr[:-1].astype(np.int64)).to(device)
            h = torch.nn.functional.embedding_bag(ids, table, offsets, mode="sum",
                                                  per_sample_weights=torch.from_numpy(X.data).to(device))
            f = torch.nn.functional
            h = h + f.linear(f.gelu(f.linear(h, W0, b0)), W2, b2)
            E = f.normalize(h, dim=-1)
            E = torch.cat([E, torch.ones_like(E[:, :1])], dim=1)
        return E.cpu().numpy()

    def topk(self, X: sp.csr_matrix, k: int, *, device: str = "cpu", doc_chunk: int = 4096,
             label_chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """(labels, scores) of each row's k best prototypes by exact inner product, (N x k) each."""
        import torch

        k = min(k, self.n_labels)
        P = torch.from_numpy(self.arrays["prototypes"]).to(device)
        copies = "copy_label" in self.arrays
        if copies:  # a label's score is the max over its rows: scored as one (docs x labels) block
            owner = torch.from_numpy(self.row_label).to(device)
            doc_chunk = max(1, min(doc_chunk, 2**25 // max(P.shape[0], 1)))
            label_chunk = P.shape[0]
        idx_parts, val_parts = [], []
        for a in range(0, X.shape[0], doc_chunk):
            E = torch.from_numpy(self.embed(X[a:a + doc_chunk], device)).to(device)
            if copies:
                S = torch.full((E.shape[0], self.n_labels), -torch.inf, device=device)
                S = S.scatter_reduce(1, owner.expand(E.shape[0], -1), E @ P.T, reduce="amax")
                v, i = S.topk(k, dim=1)
                idx_parts.append(i.cpu().numpy())
                val_parts.append(v.cpu().numpy())
                continue
            best_v = torch.full((E.shape[0], 0), -np.inf, device=device)
            best_i = torch.zeros((E.shape[0], 0), dtype=torch.int64, device=device)
            for c in range(0, self.n_labels, label_chunk):
                S = E @ P[c:c + label_chunk].T
                v, i = S.topk(min(k, S.shape[1]), dim=1)
                best_v, order = torch.cat([best_v, v], 1).topk(min(k, best_v.shape[1] + v.shape[1]), dim=1)
                best_i = torch.cat([best_i, i + c], 1).gather(1, order)
            idx_parts.append(best_i.cpu().numpy())
            val_parts.append(best_v.cpu().numpy())
        return np.concatenate(idx_parts), np.concatenate(val_parts)

    def predict(self, X: sp.csr_matrix, k: int, device: str = "cpu") -> sp.csr_matrix:
        """(N x L) CSR of each row's top-k dense scores mapped to (0, 1]: ``exp(beta * (s - s_top))``."""
        idx, val = self.topk(X, k, device=device)
        return from_topk(idx, probabilities(val, self.beta), self.n_labels)

    def save(self, folder: str | Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        np.savez(Path(folder) / FILE, **self.arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, folder: str | Path, n_features: int, n_labels: int) -> DenseModel:
        """Read and check every array's presence, shape and finiteness."""
        from xmc.io.model_bundle import load_npz

        path = Path(folder) / FILE
        arrays = load_npz(Path(folder), FILE, ARRAYS)
        D, d = arrays["embedding"].shape
        rows = n_labels
        if "copy_label" in arrays:
            owner = arrays["copy_label"]
            if owner.ndim != 1 or not np.issubdtype(owner.dtype, np.integer) or len(owner) < n_labels \
                    or (len(owner) and (owner.min() < 0 or owner.max() >= n_labels)):
                raise BundleError(f"{path}: copy_label must be >= {n_labels} label ids in [0, {n_labels})")
            rows = len(owner)
        shapes = {"embedding": (n_features, d), "mlp_0_weight": (d, d), "mlp_0_bias": (d,),
                  "mlp_2_weight": (d, d), "mlp_2_bias": (d,), "prototypes": (rows, d + 1),
                  "fusion": (4,) if arrays["fusion"].shape == (4,) else (3,)}  # (3,): saved before kept ranks
        for key, shape in shapes.items():
            if arrays[key].shape != shape:
                raise BundleError(f"{path}: {key} has shape {arrays[key].shape}, expected {shape}")
            if not np.all(np.isfinite(arrays[key])):
                raise BundleError(f"{path}: {key} holds NaN or inf: the model is corrupt")
        return cls(arrays, n_labels)


def probabilities(scores: np.ndarray, beta: float) -> np.ndarray:
    """Each row's scores as ``exp(beta * (s - s_top))`` in (0, 1]: comparable with the tree's path scores."""
    top = scores.max(axis=1, keepdims=True) if scores.shape[1] else scores
    return np.exp(beta * (scores - top)).astype(np.float32)


def dense_model_of(net: PrimeNet, C: torch.Tensor, text: Triple | None = None) -> DenseModel:
    """The arrays of a trained ``PrimeNet`` with its final prototypes over centroids ``C``."""
    import torch

    arrays: dict[str, np.ndarray] = {}
    with torch.no_grad():
        enc = net.encoder
        arrays["embedding"] = enc.embedding.weight.detach().cpu().numpy().astype(np.float32)
        for i in (0, 2):
            layer = enc.mlp[i]
            assert isinstance(layer, torch.nn.Linear)
            arrays[f"mlp_{i}_weight"] = layer.weight.detach().cpu().numpy().astype(np.float32)
            arrays[f"mlp_{i}_bias"] = layer.bias.detach().cpu().numpy().astype(np.float32)
        arrays["prototypes"] = all_prototypes(net, C, text).cpu().numpy().astype(np.float32)
    arrays["fusion"] = np.zeros(4, dtype=np.float64)
    return DenseModel(arrays, net.prototypes.n_labels)


def all_prototypes(net: PrimeNet, C: torch.Tensor, text: Triple | None = None, chunk: int = 8192
                   ) -> torch.Tensor:
    """Every label's prototype (L x (d + 1)), in chunks; ``text``: the label-text CSR as tensors, or None."""
    import torch

    n_labels = net.prototypes.n_labels
    out = []
    with torch.no_grad():
        for a in range(0, n_labels, chunk):
            b = min(a + chunk, n_labels)
            lab = torch.arange(a, b, device=C.device)
            t = net.encoder.bag(*text_slice(text, a, b)) if text is not None else None
            out.append(net.prototypes(lab, t, C[lab] if net.prototypes.params.centroids else None))
    return torch.cat(out)


def text_slice(text: Triple, a: int, b: int) -> Triple:
    """Rows a..b of a CSR held as (indices, indptr, values) tensors."""
    indices, indptr, values = text
    lo, hi = int(indptr[a]), int(indptr[b])
    return indices[lo:hi], indptr[a:b + 1] - lo, values[lo:hi]
