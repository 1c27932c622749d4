"""Turning client frames into predictions: decoding, preprocessing, runtimes, the model cache."""
