"""Choose `xmc featurize` defaults on validation splits of the text corpora's training records.

    python bench/select_featurize.py [--sets pypi-tags,debian-tags,debian-deps] [--splits 4]
                                     [--variants '{"stemmer": "none"}' ...] [--out DIR]

Split s holds out the training records with ``crc32(f"{s}:{id}") % 5 == 0`` (a fifth; the test file
is never read). For each split and variant the text transform is fitted on the other records and
applied to both: the product's own ``TextVectorizer`` cuts the terms (tokens, stop words, stems,
pairs) and weighs them (tf, idf, L2), with the vocabulary rule of ``xmc featurize`` (words in
>= min_df records, pairs in >= min_df_bigram, the max_features most frequent, numbered by (df
descending, term)) counted here in Python instead of Spark: the same numbers (tests/test_featurize.py
checks Spark's rows against this arithmetic) without a JVM per fit. The model is the product's
defaults. Prints per set each variant's P@1 / P@5 and its paired change against the defaults
(``FeaturizeParams()``) with the standard error over the splits, and writes
OUT/select_featurize.{md,json}. The selection rule is select_defaults.py's: a variant becomes a
default only where it wins on the mean over sets and loses no set beyond noise.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from compare import RESULTS, TEXT_CORPORA, read_corpus  # bench/ is on sys.path when run as a script
from select_defaults import paired

from xmc import XMCParams
from xmc.core.fit import fit
from xmc.core.metrics import evaluate
from xmc.engines.spark.params import FeaturizeParams
from xmc.io.vectorizer import TextVectorizer

SUPPORTED = {"split_digits", "stemmer", "ngram_max", "prefix_length", "min_df", "min_df_bigram",
             "max_features", "sublinear_tf", "lowercase", "token_pattern", "min_token_length"}
"""Fields this script can vary (stop words need Spark's list; the encoder and splits are not text rules)."""


def fitted_vectorizer(texts: list[str], p: FeaturizeParams) -> TextVectorizer:
    """The vectorizer `xmc featurize` would fit on ``texts`` with settings ``p`` (no stop words)."""
    settings = p.vectorizer_settings()
    probe = TextVectorizer([], np.zeros(0), **settings)
    df: Counter[str] = Counter()
    for text in texts:
        df.update(set(probe.terms(text)))
    kept = [t for t, c in df.items() if c >= (p.min_df_bigram if " " in t else p.min_df)]
    vocab = sorted(kept, key=lambda t: (-df[t], t))[:p.max_features]
    idf = np.array([np.log((1.0 + len(texts)) / (1.0 + df[t])) + 1.0 for t in vocab])
    return TextVectorizer(vocab, idf, n_docs=len(texts), **settings)


def label_matrices(fitting: list[dict[str, Any]], held: list[dict[str, Any]]) -> tuple[sp.csr_matrix, ...]:
    """0/1 label matrices over the fitting records' labels (a held-out label unseen there is dropped)."""
    names = sorted({name for r in fitting for name in r["labels"]})
    index = {name: j for j, name in enumerate(names)}

    def matrix(records: list[dict[str, Any]]) -> sp.csr_matrix:
        indptr, cols = [0], []
        for r in records:
            cols.extend(sorted({index[n] for n in r["labels"] if n in index}))
            indptr.append(len(cols))
        return sp.csr_matrix((np.ones(len(cols), np.float32), cols, indptr), shape=(len(records), len(names)))

    return matrix(fitting), matrix(held)


def score(records: list[dict[str, Any]], splits: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Validation P@1 / P@5 of one featurization variant, per split and on average."""
    params = FeaturizeParams().replace(**changes)
    rows = []
    for s in range(splits):
        held_out = [zlib.crc32(f"{s}:{r['id']}".encode()) % 5 == 0 for r in records]
        fitting = [r for r, h in zip(records, held_out, strict=True) if not h]
        held = [r for r, h in zip(records, held_out, strict=True) if h]
        vectorizer = fitted_vectorizer([r["text"] for r in fitting], params)
        Y, Y_held = label_matrices(fitting, held)
        start = time.perf_counter()
        model = fit(vectorizer.transform(r["text"] for r in fitting), Y, XMCParams())
        seconds = time.perf_counter() - start
        m = evaluate(Y_held, model.predict(vectorizer.transform(r["text"] for r in held), topk=5), (1, 5))
        rows.append((m["P@1"], m["P@5"], seconds, vectorizer.n_terms))
    p1, p5, seconds, terms = np.mean(rows, axis=0)
    return {"P@1": float(p1), "P@5": float(p5), "fit_s": float(seconds), "terms": float(terms),
            "split_P@1": [r[0] for r in rows], "split_P@5": [r[1] for r in rows]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(TEXT_CORPORA), help="comma list of " + ", ".join(TEXT_CORPORA))
    ap.add_argument("--splits", type=int, default=4, help="held-out fifths of each training file")
    ap.add_argument("--variants", nargs="*", default=['{"stemmer": "none"}'],
                    help="JSON objects of changed featurize fields: " + ", ".join(sorted(SUPPORTED)))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    sets = args.sets.split(",")
    if unknown := [s for s in sets if s not in TEXT_CORPORA]:
        ap.error(f"unknown set: {', '.join(unknown)}")
    variants = {"default": {}, **{text: json.loads(text) for text in args.variants}}
    for changes in variants.values():
        if bad := set(changes) - SUPPORTED:
            ap.error(f"this script cannot vary {', '.join(sorted(bad))}")
        FeaturizeParams().replace(**changes)  # a bad value fails here, before any fit
    results: dict[str, dict[str, dict[str, Any]]] = {v: {} for v in variants}
    lines = ["| set | variant | P@1 / P@5 (fit s, terms) | P@1 change +- se / P@5 change |",
             "|---|---|---|---|"]
    for name in sets:
        records = read_corpus("train", name)
        for variant, changes in variants.items():
            r = results[variant][name] = score(records, args.splits, changes)
            d1, se = paired(r, results["default"][name], "P@1")
            d5, _ = paired(r, results["default"][name], "P@5")
            change = "" if variant == "default" else f"{d1:+.2f} +- {se:.2f} / {d5:+.2f}"
            lines.append(f"| {name} | {variant} | {r['P@1']:.2f} / {r['P@5']:.2f} ({r['fit_s']:.1f}, "
                         f"{r['terms']:.0f}) | {change} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "select_featurize.md").write_text(
        f"`python bench/select_featurize.py --sets {args.sets} --splits {args.splits} --variants "
        + " ".join(f"'{v}'" for v in args.variants) + "`: held-out fifths of "
        "the training records only; mean over the splits, changes paired against the defaults.\n\n"
        + text + "\n")
    (args.out / "select_featurize.json").write_text(json.dumps(
        {"sets": sets, "splits": args.splits, "variants": variants, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
