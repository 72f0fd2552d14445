"""The nightly retrain: ``config`` (the night's params file), ``gate`` (score and decide whether the
candidate beats the champion), ``run`` (featurize -> train -> gate -> register/promote, one night)."""
