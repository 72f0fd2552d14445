"""Featurization parameters: the one source of their defaults, for the job's flags, configs and manifest.

Like ``xmc.params``, a frozen dataclass validated on creation; ``xmc featurize --help`` lists
every field as a flag with its docstring and default, and a bundle's manifest saves them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from xmc.errors import ParamError
from xmc.params import coerce_fields, read_json_object

InputFormat = Literal["auto", "jsonl", "parquet", "xc"]
StopWords = Literal["none", "english"]
SplitDigits = Literal["none", "trailing", "all"]
Stemmer = str
"""'none' or a Snowball stemmer's language (STEMMERS)."""

INPUT_FORMATS: tuple[str, ...] = ("auto", "jsonl", "parquet", "xc")
STOP_WORDS: tuple[str, ...] = ("none", "english")
SPLIT_DIGITS: tuple[str, ...] = ("none", "trailing", "all")
STEMMERS: tuple[str, ...] = (
    "none", "arabic", "armenian", "basque", "catalan", "czech", "danish", "dutch", "dutch_porter", "english",
    "esperanto", "estonian", "finnish", "french", "german", "greek", "hindi", "hungarian", "indonesian",
    "irish", "italian", "lithuanian", "nepali", "norwegian", "persian", "polish", "porter", "portuguese",
    "romanian", "russian", "serbian", "sesotho", "spanish", "swedish", "tamil", "turkish", "yiddish")
"""'none' and snowballstemmer 3.1's languages (tests/test_stemming.py checks the list against it)."""


def _require(ok: bool, name: str, value: object, fix: str) -> None:
    if not ok:
        raise ParamError(f"{name}={value!r} is invalid: {fix}")


@dataclass(frozen=True)
class FeaturizeParams:
    """How raw labelled text (or XC BoW) becomes the training bundle."""

    input_format: InputFormat = "auto"
    """'jsonl' or 'parquet' records {id, text, labels}, or 'xc' BoW; 'auto' decides by name and header."""
    lowercase: bool = True
    """Lowercase text before tokenizing."""
    token_pattern: str = r"\w+"
    """A token is a match of this regex; \\w means Unicode letters, marks, digits and '_' (Java's (?U)\\w)."""
    min_token_length: int = 1
    """Shorter tokens are dropped; the length is the token's, before stemming (a stem may be
    shorter). 1 keeps one-letter words ('C', 'R', 'X' name languages and systems): against 2, on
    held-out fifths of the training records (bench/select_featurize.py), P@1 / P@5 debian-tags
    +0.26 +- 0.03 / +0.13 (8 splits), debian-deps +0.05 +- 0.06 / +0.24 (4), pypi-tags +0.10 +-
    0.11 / -0.06 (16)."""
    split_digits: SplitDigits = "trailing"
    """Cut tokens at digits, after the length filter and before stop words and stems. 'trailing':
    a token of non-digits ending in digits becomes the two ('libssl3' -> 'libssl', '3'; '2captcha'
    and 'x86_64' stay whole); 'all': every run of digits and of the rest; 'none': no cut. Against
    'none', on held-out fifths of the training records (bench/select_featurize.py), P@1 +- se / P@5:
    'trailing' debian-tags +0.55 +- 0.10 / +0.04 (8 splits), debian-deps +0.06 +- 0.09 / +0.10
    (4), pypi-tags -0.02 +- 0.08 / -0.02 (16); 'all' +0.82 / +0.33 but pypi-tags -0.23 +- 0.09,
    a loss beyond noise."""
    stop_words: StopWords = "none"
    """'english' removes Spark's English stop-word list (saved with the vectorizer)."""
    stemmer: Stemmer = "english"
    """Snowball stemmer applied to every token after stop words, before pairs are formed ('none'
    keeps tokens as they are): 'libraries' and 'library' become one term. On held-out fifths of the
    text corpora's training records (bench/select_featurize.py; 8 / 8 / 4 splits), P@1 pypi-tags
    +0.63 +- 0.24, debian-tags +0.05 +- 0.09, debian-deps +0.03 +- 0.12, at the same fit time.
    Name the corpus's language. Stemming runs in the Spark executors' Python workers; 'none' keeps
    them JVM-only."""
    prefix_length: int = 3
    """k > 0: each token (after stems) longer than k characters also counts as its first k characters,
    a term of its own ('<' and the prefix; no word holds '<'), beside words and pairs. Names coined
    from a common start ('libxml', 'libgtk'; 'pytest', 'pyqt') share a term, which a word seen once
    or never in training still matches. 0: off. 3 against 0, on held-out fifths of the training
    records (bench/select_featurize.py), P@1 +- se / P@5: debian-tags +0.90 +- 0.04 / +0.20 (12
    splits), pypi-tags +0.36 +- 0.23 / +0.05 (16), debian-deps -0.03 +- 0.04 / +0.11 (6), fit +18 %
    there; 4 gained less on every corpus (-0.29, -0.13, -0.01 against 3), 2 lost pypi-tags."""
    ngram_max: int = 2
    """Longest word n-gram: 1 (words) or 2 (words and adjacent word pairs; +1.3 P@1 on debian-deps validation splits)."""
    min_df: int = 1
    """A word needs this many training documents to enter the vocabulary. 1: a word one training
    document has still matches new text (a name, a jargon term): +1.7 P@1 on pypi-tags validation
    folds, level on debian-deps."""
    min_df_bigram: int = 2
    """A word pair (``ngram_max`` 2) needs this many training documents to enter the vocabulary
    (most pairs seen once are one-off phrases: with 1, pypi-tags P@1 gave back 0.5 of that gain)."""
    max_features: int = 1_000_000
    """Largest vocabulary; the most frequent terms by document frequency (ties by term) are kept."""
    sublinear_tf: bool = True
    """Term frequency tf -> 1 + ln(tf): a word repeated 10 times is not 10 times the evidence."""
    l2_normalize: bool = True
    """L2-normalise each document's TF-IDF row (so long documents do not dominate)."""
    text_encoder: str = ""
    """A local pretrained text encoder: a Hugging Face or sentence-transformers model folder (config.json, model.safetensors, tokenizer). Its pooled unit embedding of each document is appended to the TF-IDF row as extra columns, frozen, and saved in the bundle so prediction embeds new text the same way ('' = none; needs pip install 'xmc[text]')."""
    text_encoder_weight: float = 1.0
    """Weight of the embedding against the TF-IDF part (both unit-norm) before the row is L2-normalised again."""
    text_encoder_max_length: int = 128
    """Tokens of each document the text encoder reads (longer text is truncated)."""
    docs_per_partition: int = 5000
    """Documents per task in the per-document steps: fewer = less memory per task, more tasks."""
    cooc_topk: int = 10
    """Co-occurring labels kept per label in the label statistics."""
    valid_fraction: float = 0.0
    """Share of documents put in the 'valid' split, by a stable hash of the id (crc32)."""
    test_fraction: float = 0.0
    """Share of documents put in the 'test' split, by a stable hash of the id (crc32)."""
    skip_bad: bool = False
    """Skip bad records (counted and reported in the manifest) instead of failing the job."""
    max_examples: int = 5
    """Bad-record examples reported (with file, line and field)."""

    def __post_init__(self) -> None:
        _require(self.input_format in INPUT_FORMATS, "input_format", self.input_format,
                 f"use one of {INPUT_FORMATS}")
        try:
            re.compile(self.token_pattern)
        except re.error as e:
            raise ParamError(f"token_pattern={self.token_pattern!r} is not a valid regex: {e}") from None
        _require(self.token_pattern != "", "token_pattern", self.token_pattern, r"use a regex such as \w+")
        _require(self.min_token_length >= 1, "min_token_length", self.min_token_length, "use >= 1")
        _require(self.stop_words in STOP_WORDS, "stop_words", self.stop_words, f"use one of {STOP_WORDS}")
        _require(self.split_digits in SPLIT_DIGITS, "split_digits", self.split_digits,
                 f"use one of {', '.join(SPLIT_DIGITS)}")
        _require(self.stemmer in STEMMERS, "stemmer", self.stemmer, f"use one of {', '.join(STEMMERS)}")
        _require(self.ngram_max in (1, 2), "ngram_max", self.ngram_max, "use 1 or 2")
        _require(self.prefix_length >= 0, "prefix_length", self.prefix_length, "use >= 0 (0 = no prefixes)")
        # "<" is xmc.io.vectorizer.PREFIX_MARK (not imported: numpy and scipy would load with the params;
        # tests/test_stemming.py checks the two agree)
        if self.prefix_length > 0 and any("<" in m for m in re.findall(self.token_pattern, "a<b <")):
            raise ParamError(f"token_pattern={self.token_pattern!r} makes tokens that hold '<', with which "
                             f"prefix terms start (prefix_length={self.prefix_length}): use a pattern "
                             "without '<' or prefix_length 0")
        _require(self.min_df >= 1, "min_df", self.min_df, "use >= 1")
        _require(self.min_df_bigram >= 1, "min_df_bigram", self.min_df_bigram, "use >= 1")
        _require(self.max_features >= 1, "max_features", self.max_features, "use >= 1")
        _require(self.docs_per_partition >= 1, "docs_per_partition", self.docs_per_partition, "use >= 1")
        _require(self.cooc_topk >= 1, "cooc_topk", self.cooc_topk, "use >= 1")
        for name in ("valid_fraction", "test_fraction"):
            value = getattr(self, name)
            _require(math.isfinite(value) and 0 <= value < 1, name, value, "use a share in [0, 1)")
        _require(self.valid_fraction + self.test_fraction < 1, "valid_fraction + test_fraction",
                 self.valid_fraction + self.test_fraction, "leave some documents for training (sum < 1)")
        _require(math.isfinite(self.text_encoder_weight) and self.text_encoder_weight > 0, "text_encoder_weight",
                 self.text_encoder_weight, "use a weight > 0, e.g. 1.0")
        _require(self.text_encoder_max_length >= 1, "text_encoder_max_length", self.text_encoder_max_length,
                 "use >= 1 tokens, e.g. 128")
        _require(self.max_examples >= 1, "max_examples", self.max_examples, "use >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def vectorizer_settings(self) -> dict[str, Any]:
        """The text rules the predict-time ``TextVectorizer`` repeats (all but the stop words, which
        come as a list): one source for Spark's fitted vectorizer and bench/select_featurize.py's, so
        a new rule reaches both."""
        return {"lowercase": self.lowercase, "token_pattern": self.token_pattern,
                "min_token_length": self.min_token_length, "split_digits": self.split_digits,
                "stemmer": self.stemmer, "ngram_max": self.ngram_max, "prefix_length": self.prefix_length,
                "sublinear_tf": self.sublinear_tf, "l2_normalize": self.l2_normalize}

    def replace(self, **values: Any) -> FeaturizeParams:
        """A copy with overrides, type-checked as ``xmc.params`` checks JSON configs, and validated."""
        known = {f.name for f in fields(FeaturizeParams)}
        for key in values:
            if key not in known:
                raise ParamError(f"unknown featurize parameter {key!r}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **coerce_fields(FeaturizeParams, values))

    @classmethod
    def from_json(cls, path: str | Path) -> FeaturizeParams:
        """A flat JSON object of fields (the ``params`` object of a bundle's manifest has this form)."""
        return cls().replace(**read_json_object(path))
