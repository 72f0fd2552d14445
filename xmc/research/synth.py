"""Synthetic XMC data with a known ground truth of multi-sense labels, generated as a stream.

The world: ``n_topics`` unrelated topics, each with its own words. A label has one *sense* (a
topic) or, for a ``multi_sense_share`` of labels, two senses in two different topics (the
"Apple" fruit / brand case). Each (label, sense) also has a few signature words of its own. A
document picks one topic, a few (label, sense) members of that topic (popular ones more often),
and words: topic words, the signatures of its labels' senses, and uniform noise. So every
positive (document, label) pair carries the sense it came from: the ground truth against which
a disentangled model's routing is scored (Variation of Information, as for composite labels).

Documents come in fixed blocks of ``BLOCK`` rows, each drawn from its own random stream seeded
by (seed, split, block index): the first n documents are the same whatever n, any block can be
made alone (in parallel, or on another machine), and memory is bounded by one block plus the
O(labels) sense table, so sizes run from tiny to millions of labels and documents.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

from xmc.errors import ParamError, require
from xmc.io.files import atomic_dir
from xmc.research.composite import TrueSplit

BLOCK = 2048
SPLITS = {"train": 0, "test": 1, "validation": 2}
MAX_LABELS_PER_DOC = 8
SynthFormat = Literal["npz", "xc", "jsonl"]
FORMATS: tuple[str, ...] = ("npz", "xc", "jsonl")


@dataclass(frozen=True)
class SynthSpec:
    """Shape of a synthetic multi-sense world (defaults: a small one for tests and demos)."""

    n_labels: int = 200
    """L: number of labels."""
    n_features: int = 5000
    """D: vocabulary size (topic words and signatures are hashed into it)."""
    n_topics: int = 0
    """Unrelated topics (0 = max(4, n_labels // 8))."""
    multi_sense_share: float = 0.2
    """Share of labels with two senses in two different topics."""
    words_per_topic: int = 40
    """Distinct words of a topic (used with a skew: a few are frequent)."""
    words_per_doc: int = 30
    """Topic and noise word tokens per document (signature words come on top)."""
    noise_share: float = 0.15
    """Share of a document's tokens drawn uniformly from the whole vocabulary."""
    signature_words: int = 3
    """Words specific to one (label, sense); each occurs in a document of it with probability 1/2."""
    labels_per_doc: float = 2.0
    """Mean labels per document (1 + Poisson, at most 8)."""
    seed: int = 0
    """Seed of the sense table and of every document block."""

    def __post_init__(self) -> None:
        require(self.n_labels >= 2, "n_labels", self.n_labels, "use >= 2")
        require(self.n_features >= 16, "n_features", self.n_features, "use >= 16")
        require(self.n_topics == 0 or self.n_topics >= 2, "n_topics", self.n_topics, "use 0 (auto) or >= 2")
        require(0 <= self.multi_sense_share <= 1, "multi_sense_share", self.multi_sense_share,
                 "use a share in [0, 1]")
        for name in ("words_per_topic", "words_per_doc"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "use >= 1")
        require(0 <= self.noise_share < 1, "noise_share", self.noise_share, "use a share in [0, 1)")
        require(self.signature_words >= 0, "signature_words", self.signature_words, "use >= 0")
        require(1 <= self.labels_per_doc <= MAX_LABELS_PER_DOC, "labels_per_doc", self.labels_per_doc,
                 "use a mean in [1, 8]")

    @property
    def topics(self) -> int:
        return self.n_topics or max(4, self.n_labels // 8)


@dataclass(frozen=True)
class SenseTable:
    """Ground truth: ``topic[l, s]`` is the topic of sense s of label l (-1: no second sense)."""

    topic: np.ndarray
    member_ptr: np.ndarray
    """CSR pointer over topics into ``member_label`` / ``member_sense``."""
    member_label: np.ndarray
    member_sense: np.ndarray

    @property
    def multi_sense(self) -> np.ndarray:
        """Boolean (L,): labels with two senses."""
        return self.topic[:, 1] >= 0


@dataclass(frozen=True)
class SynthBlock:
    """Rows of a split: features, labels, and the sense (0 or 1) behind each positive pair."""

    X: sp.csr_matrix
    Y: sp.csr_matrix
    sense: sp.csr_matrix
    """Same sparsity as Y; value = 1 + sense index of the (document, label) pair."""
    topic: np.ndarray
    """The topic each document was drawn from."""


def sense_table(spec: SynthSpec) -> SenseTable:
    """Senses of every label: balanced over topics; a second sense in a different topic."""
    rng = np.random.default_rng([spec.seed, 7])
    L, T = spec.n_labels, spec.topics
    topic = np.full((L, 2), -1, dtype=np.int64)
    topic[rng.permutation(L), 0] = np.arange(L) % T
    multi = rng.random(L) < spec.multi_sense_share
    topic[multi, 1] = (topic[multi, 0] + rng.integers(1, T, size=int(multi.sum()))) % T
    labels = np.concatenate([np.arange(L), np.flatnonzero(multi)])
    senses = np.concatenate([np.zeros(L, np.int64), np.ones(int(multi.sum()), np.int64)])
    topics = topic[labels, senses]
    order = np.lexsort((rng.random(len(labels)), topics))  # within a topic: a random popularity order
    ptr = np.searchsorted(topics[order], np.arange(T + 1))
    return SenseTable(topic, ptr.astype(np.int64), labels[order], senses[order])


def _hash(keys: np.ndarray, n_features: int, salt: int) -> np.ndarray:
    """Spread integer keys over [0, D) with a fixed odd multiplier (a cheap, seedable hash)."""
    mixed = (keys.astype(np.uint64) + np.uint64(salt)) * np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(17)) % np.uint64(n_features)).astype(np.int64)


def block(spec: SynthSpec, table: SenseTable, split: str, index: int, n_rows: int = BLOCK) -> SynthBlock:
    """Documents ``[index * BLOCK, index * BLOCK + n_rows)`` of a split (n_rows <= BLOCK)."""
    if split not in SPLITS:
        raise ParamError(f"split {split!r} is unknown: use one of {sorted(SPLITS)}")
    rng = np.random.default_rng([spec.seed, SPLITS[split], index])
    T, D = spec.topics, spec.n_features
    doc_topic = rng.integers(0, T, size=BLOCK)[:n_rows]
    n_lab = np.minimum(1 + rng.poisson(spec.labels_per_doc - 1, size=BLOCK), MAX_LABELS_PER_DOC)[:n_rows]
    # (label, sense) members: a skewed position in the topic's member list (u^2: popular first)
    u = rng.random((BLOCK, MAX_LABELS_PER_DOC))[:n_rows]
    start, size = table.member_ptr[doc_topic], np.diff(table.member_ptr)[doc_topic]
    pick = start[:, None] + np.minimum((size[:, None] * u**2).astype(np.int64), size[:, None] - 1)
    take = (np.arange(MAX_LABELS_PER_DOC)[None, :] < n_lab[:, None]) & (size[:, None] > 0)
    rows = np.repeat(np.arange(n_rows), take.sum(axis=1))
    label, sense = table.member_label[pick[take]], table.member_sense[pick[take]]
    _, order = np.unique(rows * spec.n_labels + label, return_index=True)  # drawn twice -> once
    y_row, y_label, y_sense = rows[order], label[order], sense[order]
    # words: topic words (skewed), noise words, and the signatures of the document's senses
    n_noise = int(round(spec.words_per_doc * spec.noise_share))
    n_topic = spec.words_per_doc - n_noise
    w = (spec.words_per_topic * rng.random((BLOCK, n_topic))[:n_rows] ** 1.5).astype(np.int64)
    topic_words = _hash(doc_topic[:, None] * spec.words_per_topic + w, D, salt=1)
    noise = rng.integers(0, D, size=(BLOCK, n_noise))[:n_rows]
    s = spec.signature_words
    sig_keep = rng.random((BLOCK * MAX_LABELS_PER_DOC, max(s, 1)))[: len(y_row), :s] < 0.5
    sig = _hash(((y_label * 2 + y_sense) * max(s, 1))[:, None] + np.arange(s)[None, :], D, salt=2)
    f_rows = np.concatenate([np.repeat(np.arange(n_rows), n_topic + n_noise),
                             np.repeat(y_row, s)[sig_keep.ravel()]])
    f_cols = np.concatenate([np.hstack([topic_words, noise]).ravel(), sig.ravel()[sig_keep.ravel()]])
    X = sp.csr_matrix((np.ones(len(f_rows), np.float32), (f_rows, f_cols)), shape=(n_rows, D))
    X.sum_duplicates()  # values are term counts
    shape = (n_rows, spec.n_labels)
    Y = sp.csr_matrix((np.ones(len(y_row), np.float32), (y_row, y_label)), shape=shape)
    S = sp.csr_matrix(((y_sense + 1).astype(np.int8), (y_row, y_label)), shape=shape)
    return SynthBlock(X, Y, S, doc_topic)


def blocks(spec: SynthSpec, n_docs: int, split: str = "train") -> Iterator[SynthBlock]:
    """The first ``n_docs`` documents of a split, block by block (bounded memory)."""
    table = sense_table(spec)
    for index in range(math.ceil(n_docs / BLOCK)):
        yield block(spec, table, split, index, min(BLOCK, n_docs - index * BLOCK))


def generate(spec: SynthSpec, n_docs: int, split: str = "train") -> SynthBlock:
    """All of ``n_docs`` documents in memory (tests, small benchmarks)."""
    parts = list(blocks(spec, n_docs, split))
    return SynthBlock(sp.vstack([p.X for p in parts], format="csr"),
                      sp.vstack([p.Y for p in parts], format="csr"),
                      sp.vstack([p.sense for p in parts], format="csr"),
                      np.concatenate([p.topic for p in parts]))


def label_names(spec: SynthSpec) -> list[str]:
    """``label<l>`` with a suffix naming its senses' topics, e.g. ``label7_t3+t11``."""
    table = sense_table(spec)
    return [f"label{i}_t{a}" + (f"+t{b}" if b >= 0 else "") for i, (a, b) in enumerate(table.topic)]


def _xc_lines(b: SynthBlock) -> Iterator[str]:
    for i in range(b.X.shape[0]):
        x, y = b.X[i], b.Y[i]
        feats = " ".join(f"{j}:{v:g}" for j, v in zip(x.indices, x.data, strict=True))
        yield ",".join(map(str, y.indices)) + " " + feats + "\n"


def _jsonl_lines(b: SynthBlock, names: list[str], first_id: int, split: str) -> Iterator[str]:
    for i in range(b.X.shape[0]):
        x = b.X[i]
        words = [f"w{j}" for j, c in zip(x.indices, x.data, strict=True) for _ in range(int(c))]
        yield json.dumps({"id": f"{split}-{first_id + i}", "text": " ".join(words),
                          "labels": [names[j] for j in b.Y[i].indices]}) + "\n"


def _is_synth(folder: Path) -> bool:
    """A folder ``write`` made (its spec.json and README say so): the only kind it replaces."""
    readme = folder / "README.md"
    return (folder / "spec.json").is_file() and readme.is_file() and "xmc.research.synth" in readme.read_text(
        errors="replace")


def write(spec: SynthSpec, out: str | Path, n_train: int, n_test: int, fmt: SynthFormat = "npz") -> Path:
    """Write a dataset folder atomically: train/test in ``fmt`` plus the ground truth.

    npz: ``X.trn.npz``, ``Y.trn.npz``, ``X.tst.npz``, ``Y.tst.npz`` (PECOS naming) and
    ``sense.trn.npz`` / ``sense.tst.npz``; xc: ``train.txt`` / ``test.txt`` (XC text, written
    block by block); jsonl: ``train.jsonl`` / ``test.jsonl`` raw text records ``{id, text,
    labels}`` for the Spark featurizer (word j is the token ``w<j>``). Always: ``spec.json``,
    ``label_names.txt``, ``truth.npz`` (the sense table) and a README saying how it was made.
    """
    if fmt not in FORMATS:
        raise ParamError(f"format {fmt!r} is unknown: use one of {FORMATS}")
    names = label_names(spec)
    with atomic_dir(out, owned=_is_synth, what="a synthetic dataset folder") as tmp:
        for split, n, tag in (("train", n_train, "trn"), ("test", n_test, "tst")):
            if fmt == "npz":
                b = generate(spec, n, split)
                for name, M in (("X", b.X), ("Y", b.Y), ("sense", b.sense)):
                    sp.save_npz(tmp / f"{name}.{tag}.npz", M)
                continue
            path = tmp / (f"{split}.txt" if fmt == "xc" else f"{split}.jsonl")
            with open(path, "w") as f:
                if fmt == "xc":
                    f.write(f"{n} {spec.n_features} {spec.n_labels}\n")
                for index, b in enumerate(blocks(spec, n, split)):
                    lines = _xc_lines(b) if fmt == "xc" else _jsonl_lines(b, names, index * BLOCK, split)
                    f.writelines(lines)
        table = sense_table(spec)
        np.savez(tmp / "truth.npz", topic=table.topic)
        (tmp / "label_names.txt").write_text("".join(n + "\n" for n in names))
        (tmp / "spec.json").write_text(json.dumps(
            {**spec.__dict__, "n_train": n_train, "n_test": n_test, "format": fmt}, indent=2) + "\n")
        (tmp / "README.md").write_text(
            "# Synthetic multi-sense XMC data (xmc.research.synth)\n\n"
            f"Made by `xmc synth` with the spec in spec.json ({n_train} train / {n_test} test documents,"
            f" {spec.n_labels} labels, {spec.topics} topics, {int(table.multi_sense.sum())} labels with two"
            " senses). truth.npz `topic[l, s]` is the topic of sense s of label l (-1: none);"
            " sense.*.npz, when present, holds 1 + the sense behind each positive pair.\n")
    return Path(out)


def sense_splits(sense: sp.csr_matrix, table: SenseTable) -> list[TrueSplit]:
    """The true split (by sense) of every multi-sense label's positives, for ``split_vi``."""
    S = sp.csc_matrix(sense)
    return [TrueSplit(int(label), S[:, label].indices.copy(), S[:, label].data.astype(np.int64) - 1)
            for label in np.flatnonzero(table.multi_sense)]
