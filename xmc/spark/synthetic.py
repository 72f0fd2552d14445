"""A synthetic labelled text corpus (topics with word distributions), for tests and the benchmark.

Each label owns a few topic words; a document picks 1-3 labels (popular labels more often),
then draws about a third of its words from its labels' topics and the rest from a Zipf
background vocabulary. A linear model can learn it, and a featurizer sees realistic shapes:
a long-tailed vocabulary, repeated words, frequency-ordered labels. Deterministic per seed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def _words(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct pronounceable pseudo-words of 2-4 syllables."""
    out: dict[str, None] = {}
    while len(out) < n:
        k = rng.integers(2, 5, size=n)
        syl = rng.integers(0, len(_SYLLABLES), size=(n, 4))
        for i in range(n):
            out.setdefault("".join(_SYLLABLES[j] for j in syl[i, : k[i]]), None)
            if len(out) == n:
                break
    return list(out)


def synthetic_records(
    n_docs: int, n_labels: int = 50, vocab_size: int = 5000, topic_words: int = 20, mean_len: int = 60,
    seed: int = 0, id_prefix: str = "d",
) -> Iterator[dict[str, object]]:
    """Yield ``{"id", "text", "labels"}`` records."""
    rng = np.random.default_rng(seed)
    vocab = np.array(_words(rng, vocab_size))
    label_names = [f"label_{w}" for w in _words(np.random.default_rng(seed + 1), n_labels)]
    topics = rng.integers(0, vocab_size, size=(n_labels, topic_words))
    label_p = 1.0 / np.arange(1, n_labels + 1) ** 0.7
    label_p /= label_p.sum()
    background_p = 1.0 / np.arange(1, vocab_size + 1)
    background_p /= background_p.sum()
    chunk = 10_000
    for start in range(0, n_docs, chunk):
        m = min(chunk, n_docs - start)
        n_lab = rng.integers(1, 4, size=m)
        lengths = np.maximum(5, rng.poisson(mean_len, size=m))
        bg = rng.choice(vocab_size, size=int(lengths.sum()), p=background_p)
        from_topic = rng.random(size=len(bg)) < 0.35
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for i in range(m):
            labels = rng.choice(n_labels, size=n_lab[i], replace=False, p=label_p)
            s, e = offsets[i], offsets[i + 1]
            words = bg[s:e].copy()
            mask = from_topic[s:e]
            k = int(mask.sum())
            words[mask] = topics[rng.choice(labels, size=k), rng.integers(0, topic_words, k)]
            text = " ".join(vocab[words].tolist())
            yield {"id": f"{id_prefix}{start + i}", "text": text.capitalize() + ".",
                   "labels": [label_names[j] for j in labels]}

