"""Bibtex predictions equal those the package made before it was split into layers.

``tests/data/bibtex_predictions_4b18fa5.npz`` holds the top-5 labels and scores of the Bibtex test
split for two models (the defaults, and leaf 16 without rounds), written by the flat package at
commit 4b18fa5. A change meant to keep behaviour (a move, a refactor) must keep them: labels exactly,
scores to float32 rounding. A change of a default or of the algorithm updates the file on purpose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xmc import XMCParams, fit
from xmc.core.sparse import topk_rows

REFERENCE = Path(__file__).parent / "data" / "bibtex_predictions_4b18fa5.npz"
# the defaults of 4b18fa5 (Newton-CG, C = 1, l3-hinge, branching 16), pinned: later default changes
# do not move the reference
OLD_DEFAULTS = XMCParams().replace(algorithm="newton-cg", cost=1.0, post_processor="l3-hinge",
                                   branching_factor=16)
MODELS = {"default": OLD_DEFAULTS, "leaf16_r0": OLD_DEFAULTS.replace(max_leaf_size=16, rounds=0)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bibtex_top5_equals_the_reference_predictions(bibtex, name: str) -> None:  # type: ignore[no-untyped-def]
    ref = np.load(REFERENCE)
    model = fit(bibtex["X.trn"], bibtex["Y.trn"], MODELS[name])
    labels, scores = topk_rows(model.predict(bibtex["X.tst"], topk=5), 5)
    np.testing.assert_array_equal(labels, ref[f"{name}_labels"])
    np.testing.assert_allclose(scores, ref[f"{name}_scores"], rtol=1e-6, atol=1e-7)
