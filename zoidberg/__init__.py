"""Zoidberg 2.0: pneumonia detection on chest X-rays with patient-grouped k-fold cross-validation."""

import logging
import os

# TensorFlow's C++ start-up chatter (CPU feature notices) and its Python warnings about
# retracing (every fold and trial builds a new model, so retracing is expected) are noise
# for CLI and dashboard users. Set here, before any module imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("tensorflow").setLevel(logging.ERROR)

__version__ = "2.0.0"
