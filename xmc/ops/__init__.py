"""Operations built on the engines: batch prediction, the nightly retrain, standard datasets."""
