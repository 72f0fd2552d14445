"""bench/select_featurize.py: its vocabulary rule and its refusals (the fits themselves are the bench's).
tests/test_featurize.py checks its vectorizer against the one Spark fits on the same records."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import select_featurize as sf  # noqa: E402

from xmc.engines.spark.params import FeaturizeParams  # noqa: E402


def test_vocabulary_follows_featurizes_rule() -> None:
    """Words in >= min_df texts, pairs in >= min_df_bigram, the max_features most frequent by
    (df descending, term), idf smoothed; stems when the stemmer is on, and the stems' prefixes of 3
    (a term with '<', which sorts before the letters)."""
    texts = ["red apples and red pears", "green apples", "red apple tree", "pears"]
    vec = sf.fitted_vectorizer(texts, FeaturizeParams())
    df = {"<app": 3, "appl": 3, "<pea": 2, "pear": 2, "red": 2, "red appl": 2}  # 'red appl' in texts 1, 3
    assert vec.vocab[:6] == ["<app", "appl", "<pea", "pear", "red", "red appl"]
    assert "green appl" not in vec.vocab and {"green", "and", "tree", "<gre", "<tre"} <= set(vec.vocab)
    assert "<red" not in vec.vocab  # 'red' is not longer than 3
    np.testing.assert_allclose(vec.idf[:6], [np.log(5 / (1 + df[t])) + 1 for t in vec.vocab[:6]])
    plain = sf.fitted_vectorizer(texts, FeaturizeParams(stemmer="none", prefix_length=0, min_df=2,
                                                        max_features=2))
    assert plain.vocab == ["apples", "pears"]  # df 2 each; 'red' (2) comes after by term; cut at 2
    assert plain.transform(["Red apples"]).nnz == 1


def test_unknown_set_or_field_is_refused_before_any_fit(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        sf.main(["--sets", "bibtex", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        sf.main(["--variants", '{"stop_words": "english"}', "--out", str(tmp_path)])
    with pytest.raises(Exception, match="stemmer='klingon'"):
        sf.main(["--variants", '{"stemmer": "klingon"}', "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())
