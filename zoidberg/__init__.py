"""Zoidberg 2.0: pneumonia detection on chest X-rays with patient-grouped k-fold cross-validation."""

__version__ = "2.0.0"
