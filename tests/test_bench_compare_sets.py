"""bench/compare.py: choosing sets by group, and saying where ours does not lead."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import compare  # noqa: E402


def test_groups_resolve_in_order_without_repeats() -> None:
    real = ["bibtex", "debian-deps", "debian-deps-tfidf", "pypi-tags", "pypi-tags-tfidf", "debian-tags",
            "debian-tags-tfidf", "pypi-tags-words", "debian-tags-words"]
    assert compare.resolve_sets("real") == real
    assert compare.resolve_sets("bibtex,real,synth-1k") == [*real, "synth-1k"]
    assert "synth-100k" not in compare.resolve_sets("all")
    assert {compare.DATASETS[d].kind for d in compare.resolve_sets("all")} == {"real", "derived", "synthetic"}
    with pytest.raises(ValueError, match="unknown set"):
        compare.resolve_sets("real,nope")


def row(p1: float, p5: float, fit: float, rss: float) -> dict[str, object]:
    return {"status": "ok", "seeds": 1, "P@1": p1, "P@5": p5, "fit_s": fit, "peak_rss_mib": rss}


def test_not_leading_names_every_measure_behind_the_best_peer() -> None:
    table = {
        "debian-deps": {"xmc-disentangled": row(50.0, 20.0, 9.0, 800.0),
                        "pecos-xrlinear": row(49.0, 21.0, 3.0, 300.0),
                        "omikuji-parabel": row(48.0, 19.0, 5.0, 200.0),
                        "napkinxc-plt": {"status": "timeout (> 900 s)", "seeds": 1}},
        "synth-1k": {"xmc-disentangled": row(80.0, 30.0, 1.0, 100.0),
                     "pecos-xrlinear": row(79.0, 29.0, 2.0, 200.0)},
    }
    deb, synth = compare.not_leading(table)
    assert deb.startswith("debian-deps (real): xmc-disentangled does NOT lead on ")
    assert "P@1" not in deb and "P@5 20.00 vs pecos-xrlinear 21.00" in deb
    assert "fit s 9.00 vs pecos-xrlinear 3.00" in deb and "peak RSS MiB 800 vs omikuji-parabel 200" in deb
    assert synth == "synth-1k (synthetic): xmc-disentangled leads every peer on P@1, P@5, fit s and peak RSS"
    text = "\n".join(compare.summary(table))
    assert "debian-deps (real)" in text and "synth-1k (synthetic)" in text and "| timeout (> 900 s) |" in text


def test_two_hop_labels_come_from_training_packages_and_rows_without_one_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The many-labels proxy: a package's labels are its dependencies and theirs, looked up among the
    training packages only (a test package's own labels never shape another row); the most frequent
    labels under the share cap are kept, and rows left without one are dropped."""
    train = [{"id": "a", "text": "alpha beta", "labels": ["b"]},
             {"id": "b", "text": "beta gamma", "labels": ["c", "d"]},
             {"id": "c", "text": "gamma delta", "labels": ["d"]},
             {"id": "e", "text": "epsilon", "labels": ["x"]}]
    test = [{"id": "t", "text": "alpha zeta", "labels": ["b"]},
            {"id": "u", "text": "omega", "labels": ["q"]},
            {"id": "v", "text": "delta", "labels": ["t"]}]  # t's labels are not looked up
    splits = {"train": train, "test": test}
    monkeypatch.setattr(compare, "read_corpus", lambda split, corpus="debian-deps": splits[split])
    monkeypatch.setattr(compare, "TWO_HOP_MAX_SHARE", 1.0)
    monkeypatch.setattr(compare, "TWO_HOP_LABELS", 3)  # d 3 rows, c 2, then b over x (1 each) by name
    X, Y, Xt, Yt, _ = compare.two_hop()
    names = ["b", "c", "d"]
    # e's only label, x, is not kept
    assert [[names[j] for j in row.indices] for row in Y] == [["b", "c", "d"], ["c", "d"], ["d"]]
    assert [[names[j] for j in row.indices] for row in Yt] == [["b", "c", "d"]]  # u, v: no kept label
    assert X.shape == (3, 5) and Xt.shape == (1, 5) and Xt.nnz == 1  # five stems; "zeta" unknown
    monkeypatch.setattr(compare, "TWO_HOP_MAX_SHARE", 0.5)  # d (3 of 4 rows) and c (2 of 4) dropped
    _, Y, _, Yt, _ = compare.two_hop()
    assert Y.shape == (2, 2) and Y.toarray().tolist() == [[1, 0], [0, 1]] and Yt.shape == (1, 2)


def test_the_plot_shows_each_systems_p1_over_its_sets_best_peer(tmp_path: Path) -> None:
    ok = {"status": "ok", "P@1_sd": 0.1, "fit_s": 1.0}
    table = {"a": {"xmc-disentangled": {**ok, "P@1": 70.5}, "pecos-xrlinear": {**ok, "P@1": 70.0},
                   "omikuji-bonsai": {**ok, "P@1": 70.2}, "napkinxc-plt": {"status": "failed"}},
             "b": {"xmc-disentangled": {**ok, "P@1": 45.0}}}  # no peer ran
    over = compare.p1_over_best_peer(table)
    assert over["a"] == pytest.approx({"xmc-disentangled": 0.3, "pecos-xrlinear": -0.2,
                                       "omikuji-bonsai": 0.0})  # the failed peer counts for nothing
    assert np.isnan(over["b"]["xmc-disentangled"])
    compare.plot(table, tmp_path / "peers.png")
    assert (tmp_path / "peers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
