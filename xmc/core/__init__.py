"""The algorithm: label tree, solver, training units, beam search, precision-gain rounds, metrics.

Imports no engine (Spark, Ray, MLflow) and no operation."""
