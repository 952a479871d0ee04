"""Tuning: search spaces from the registry, tuning configuration, results and the keras-tuner search."""
