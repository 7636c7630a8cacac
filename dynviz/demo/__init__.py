"""The demo: the whole dynviz chain on synthetic data (train, record, analyze, extract, retrain,
compare, report), as ``dynviz demo`` runs it."""
