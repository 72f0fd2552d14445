"""Spark featurization: raw labelled text (or XC BoW) -> the features bundle the trainer reads.

Modules: ``session`` (the one SparkSession factory), ``params`` (FeaturizeParams), ``read``
(input and bad-record checks), ``text`` (TF-IDF), ``labels`` (label statistics, PIFA), ``xc``
(BoW input), ``featurize`` (the pipeline) and ``bundle`` (the contract and its loader, which
needs no Spark).
Import the modules you need: this package imports nothing, so reading a bundle does not
start pyspark.
"""
