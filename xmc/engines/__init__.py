"""The real engines: Ray (executor), Spark (featurization), MLflow (tracking, pyfunc, plots)."""
