"""Files: the model bundle, the features bundle, checkpoints, the text vectorizer and the input readers."""
