"""Dynamic-margin triplet loss over in-batch hard negatives (PRIME's loss, written from the paper).

For each anchor (a document, or a prototype in the dual direction) one positive is sampled among
its targets; the ``k`` highest-scoring non-targets of the batch are its negatives. A negative costs
``max(0, s_n - s_p + m)`` with the margin ``m = clamp(|s_p - s_n|, m_min, m_max)`` (detached): a
pair that is already far apart asks for a wide margin, a confusable one for a narrow margin it can
meet. With ``tau > 0`` the violating negatives are weighted by a softmax of their scores / tau, so
the worst violators dominate. Sum over negatives, mean over anchors.
"""

from __future__ import annotations

import torch

FLOOR = -100.0
"""Score given to masked entries: below any cosine or biased inner product the model produces."""


def dynamic_margin_triplet(
    S: torch.Tensor, targets: torch.Tensor, *, n_negatives: int, margin_min: float, margin_max: float,
    tau: float = 0.0, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean loss of the anchors (rows of S) that have at least one target; 0 if none has."""
    keep = targets.sum(1) > 0
    if not bool(keep.any()):
        return S.sum() * 0.0
    S, targets = S[keep], targets[keep]
    pos = torch.multinomial(targets, 1, generator=generator)
    s_p = S.gather(1, pos)
    k = min(n_negatives, S.shape[1])
    s_n = torch.where(targets == 0, S, torch.full_like(S, FLOOR)).topk(k, dim=1).values
    margin = torch.clamp((s_p - s_n).abs().detach(), margin_min, margin_max)
    loss = torch.relu(s_n - s_p + margin) * (s_n > FLOOR / 2)
    if tau > 0:
        loss = loss * torch.softmax(torch.where(loss > 0, s_n, torch.full_like(s_n, FLOOR)) / tau, dim=1)
    return loss.sum(1).mean()
