"""TF-IDF in Spark: Spark ML tokenizer, stop words, Snowball stems (a pandas UDF) and n-grams, then
vocabulary and weights in Spark SQL.

The vocabulary is chosen here rather than by ``CountVectorizer`` because ours must be
deterministic and bounded by document frequency: words with ``df >= min_df`` and word pairs
with ``df >= min_df_bigram`` (a pair is the only term with a space), the
``max_features`` most frequent by df, ordered by (df desc, term). Weights are computed on
exploded (document, term) rows and gathered back into sorted index/value arrays, which is what
the bundle stores; ``xmc.io.vectorizer.TextVectorizer`` repeats the same arithmetic for new text.
"""

from __future__ import annotations

import pandas as pd  # the text encoder's pandas UDF resolves its type hints at module level
from pyspark.ml.feature import NGram, RegexTokenizer, StopWordsRemover
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType

from xmc.engines.spark.params import FeaturizeParams
from xmc.io.vectorizer import PREFIX_MARK, TextVectorizer, java_pattern

DIGIT_RUNS = r"(?U)(\d+|\D+)"
"""A token's runs of digits and of other characters, as ``xmc.io.vectorizer.DIGIT_RUNS`` cuts them."""
TRAILING_DIGITS = r"(?U)^(\D+?)(\d+)$"
"""Non-digits then digits to the end, as ``xmc.io.vectorizer.TRAILING_DIGITS`` matches them."""


def _cut(token: Column, mode: str) -> Column:
    """A token -> the array of its pieces ('trailing' or 'all', ``FeaturizeParams.split_digits``)."""
    if mode == "all":
        return F.regexp_extract_all(token, F.lit(DIGIT_RUNS), F.lit(1))
    cut = F.array(F.regexp_extract(token, TRAILING_DIGITS, 1), F.regexp_extract(token, TRAILING_DIGITS, 2))
    return F.when(token.rlike(TRAILING_DIGITS), cut).otherwise(F.array(token))


def stop_words(params: FeaturizeParams) -> list[str]:
    """Spark's stop-word list for the setting (read through the running JVM; saved with the
    vectorizer, so prediction needs no Spark)."""
    if params.stop_words == "none":
        return []
    return list(StopWordsRemover.loadDefaultStopWords(params.stop_words))


def stem_column(column: str, language: str) -> Column:
    """``array<string>`` of tokens -> their Snowball stems, in the executors' Python workers one
    Arrow batch at a time, by ``xmc.io.stems.stem_tokens``: the very function prediction calls on
    new text, so both sides make the same terms (Spark ML has no stemmer). An executor whose
    snowballstemmer is another version than the driver's (which the vectorizer records) fails the
    job rather than stem part of the corpus differently."""
    from xmc.io.stems import stemmer_class, stemmer_version

    stemmer_class(language)  # an unknown language fails here, on the driver
    expected = stemmer_version()

    @F.pandas_udf(ArrayType(StringType()))  # type: ignore[call-overload]
    def stems(tokens: pd.Series) -> pd.Series:
        from xmc.io.stems import stem_tokens, stemmer_version

        if (found := stemmer_version()) != expected:
            raise RuntimeError(f"this Spark executor has snowballstemmer {found}, the driver {expected}: "
                               f"install snowballstemmer=={expected} on every worker")
        return pd.Series([stem_tokens(list(t), language) for t in tokens])

    return stems(F.col(column))


def add_terms(docs: DataFrame, params: FeaturizeParams, stop: list[str]) -> DataFrame:
    """``text`` -> ``terms`` (array<string>): tokens, cut at digits, minus stop words, stemmed, plus
    bigrams and the tokens' prefixes when asked."""
    tokenizer = RegexTokenizer(
        inputCol="text", outputCol="_tokens", pattern=java_pattern(params.token_pattern), gaps=False,
        toLowercase=params.lowercase, minTokenLength=params.min_token_length)
    out = tokenizer.transform(docs)
    col = "_tokens"
    if params.split_digits != "none":  # Java's (?U)\d is Python's \d on str (Unicode Nd)
        out = out.withColumn("_split", F.flatten(F.transform(col, lambda t: _cut(t, params.split_digits))))
        col = "_split"
    if stop:
        # Locale pinned so the case-insensitive match does not depend on the cluster's JVM locale.
        out = StopWordsRemover(inputCol=col, outputCol="_kept", stopWords=stop, locale="en").transform(out)
        col = "_kept"
    if params.stemmer != "none":
        out = out.withColumn("_stems", stem_column(col, params.stemmer))
        col = "_stems"
    terms = F.col(col)
    if params.ngram_max == 2:
        out = NGram(n=2, inputCol=col, outputCol="_bigrams").transform(out)
        terms = F.concat(F.col(col), F.col("_bigrams"))
    if (k := params.prefix_length) > 0:  # length and substring count code points, as Python's str
        prefixes = F.transform(F.filter(F.col(col), lambda t: F.length(t) > k),
                               lambda t: F.concat(F.lit(PREFIX_MARK), F.substring(t, 1, k)))
        terms = F.concat(terms, prefixes)
    return out.withColumn("terms", terms).drop("_tokens", "_split", "_kept", "_stems", "_bigrams")


def fit_vocabulary(train: DataFrame, n_docs: int, params: FeaturizeParams) -> DataFrame:
    """``(term, feat_idx, df, idf)`` of the kept terms, ``feat_idx`` by (df desc, term asc).

    Document frequencies come from distinct terms per document; only the kept terms (at most
    ``max_features``) reach one partition for the numbering.
    """
    df = (train.select(F.explode(F.array_distinct("terms")).alias("term"))
          .groupBy("term").agg(F.count(F.lit(1)).alias("df"))
          .filter(F.col("df") >= F.when(F.col("term").contains(" "), params.min_df_bigram)  # a pair: "a b"
                  .otherwise(params.min_df)))
    top = df.orderBy(F.desc("df"), F.asc("term")).limit(params.max_features)
    order = Window.orderBy(F.desc("df"), F.asc("term"))
    return top.select(
        "term", (F.row_number().over(order) - 1).cast("int").alias("feat_idx"), "df",
        (F.log((F.lit(1.0) + n_docs) / (F.col("df") + 1.0)) + 1.0).alias("idf"))


def tfidf(docs: DataFrame, vocab: DataFrame, params: FeaturizeParams) -> DataFrame:
    """``(key, feat_idx array<int>, feat_val array<float>)`` for documents with at least one known term.

    tf = 1 + ln(count) (or count), value = tf * idf, then the row is L2-normalised if asked.
    """
    counts = (docs.select("key", F.explode("terms").alias("term"))
              .join(F.broadcast(vocab.select("term", "feat_idx", "idf")), "term")
              .groupBy("key", "feat_idx", "idf").agg(F.count(F.lit(1)).alias("tf")))
    tf = F.lit(1.0) + F.log(F.col("tf")) if params.sublinear_tf else F.col("tf").cast("double")
    v = tf * F.col("idf")
    # The norm is an aggregate of its own: a norm written inside the per-element lambda would be
    # recomputed for every element (quadratic in the row length).
    rows = counts.groupBy("key").agg(
        F.array_sort(F.collect_list(F.struct("feat_idx", v.alias("v")))).alias("fv"),
        F.sqrt(F.sum(v * v)).alias("norm"))
    norm = F.col("norm") if params.l2_normalize else F.lit(1.0)
    return rows.select("key", F.transform("fv", lambda x: x["feat_idx"]).alias("feat_idx"),
                       F.transform("fv", lambda x: (x["v"] / norm).cast("float")).alias("feat_val"))


def vectorizer_of(vocab: DataFrame, n_docs: int, params: FeaturizeParams, stop: list[str]) -> TextVectorizer:
    """Collect the fitted vocabulary (Arrow, in index order) into the predict-time vectorizer."""
    table = vocab.orderBy("feat_idx").select("term", "idf").toArrow()
    return TextVectorizer(table.column("term").to_pylist(), table.column("idf").to_numpy(),
                          stop_words=tuple(stop), n_docs=n_docs, **params.vectorizer_settings())


def embed_column(encoder_folder: str) -> Column:
    """``text`` -> ``array<float>``: the text encoder saved in ``encoder_folder`` (the bundle's own
    copy, which executors read as they read and write the bundle) embeds each Arrow batch in the
    executors' Python workers, one torch thread per task; the model loads once per worker."""
    @F.pandas_udf(ArrayType(FloatType()))  # type: ignore[call-overload]
    def embed(text: pd.Series) -> pd.Series:
        from xmc.io.text_encoder import cached

        return pd.Series(list(cached(encoder_folder).encode(text.tolist())))

    return embed(F.col("text"))


def with_embedding(rows: DataFrame, n_terms: int, weight: float, l2_normalize: bool) -> DataFrame:
    """Rows whose ``feat_idx``/``feat_val`` are followed by the ``embedding`` times ``weight`` in the
    columns ``n_terms``, ``n_terms + 1``, ...; re-normalised to unit length when asked (as
    ``xmc.io.vectorizer.with_embedding`` does for new text)."""
    def sq(a: str) -> Column:
        return F.aggregate(a, F.lit(0.0), lambda acc, x: acc + x.cast("double") * x.cast("double"))

    scale = (F.lit(1.0) / F.sqrt(sq("feat_val") + F.lit(weight * weight) * sq("embedding"))
             if l2_normalize else F.lit(1.0))
    dims = F.sequence(F.lit(n_terms), F.lit(n_terms) + F.size("embedding") - 1)
    return rows.withColumn("_scale", scale).select(
        *[c for c in rows.columns if c not in ("feat_idx", "feat_val", "embedding")],
        F.concat("feat_idx", dims).alias("feat_idx"),
        F.concat(F.transform("feat_val", lambda x: (x * F.col("_scale")).cast("float")),
                 F.transform("embedding", lambda x: (x * F.lit(weight) * F.col("_scale")).cast("float"))
                 ).alias("feat_val"))
