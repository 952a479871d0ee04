"""Zoidberg 2.0: pneumonia detection on chest X-rays with patient-grouped k-fold cross-validation."""

import os

# TensorFlow's C++ start-up chatter (CPU feature notices) is noise for CLI and dashboard users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "2.0.0"
