"""The frozen-backbone feature cache: a backbone's features of a data set computed once and kept on disk."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from zoidberg.config import ModelConfig
from zoidberg.data.arraycache import read_array_file, write_array_file
from zoidberg.data.dataset import Dataset, default_cache_dir

FEATURES_FORMAT_VERSION = 2
# Batch size of the one-off backbone pass: on a 2-core CPU, 16 images per call ran MobileNetV2
# 1.5-2x faster than 32 or 64 (activations stay in cache) and beat model.predict.
INFERENCE_BATCH_SIZE = 16
ProgressCallback = Callable[[int, int], None]

_weights_digests: dict[tuple[str, int, int], str] = {}


# ---------------------------------------------------------------------------------------
# Cache key.
# ---------------------------------------------------------------------------------------


def weights_identity(model_config: ModelConfig, image_size: int) -> str | None:
    """Returns the SHA-256 of the weights file the backbone loads, or None without weights.

    The file's content, not its path, identifies the features, so a copy of the same file
    elsewhere still hits the cache and a replaced file misses it. Digests are remembered
    per (path, size, mtime) within the process.

    Args:
        model_config: Architecture, alpha and weights.
        image_size: Input side in pixels (picks MobileNetV2's preferred file).

    Returns:
        Hex digest, or None when the backbone is randomly initialised.

    Raises:
        WeightsNotFoundError: Weights are requested but no local file holds them.
    """
    from zoidberg.models.weights import resolve_imagenet_weights

    architecture, alpha, weights = model_config.architecture, model_config.alpha, model_config.weights
    path = resolve_imagenet_weights(architecture, alpha, weights, image_size=image_size)
    if path is None:
        return None
    stat = os.stat(path)
    memo_key = (path, stat.st_size, stat.st_mtime_ns)
    if memo_key not in _weights_digests:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _weights_digests[memo_key] = digest.hexdigest()
    return _weights_digests[memo_key]


def feature_cache_key(dataset: Dataset, model_config: ModelConfig, image_size: int, weights_digest: str) -> dict:
    """Returns everything the cached features depend on, as a JSON-ready dict.

    Args:
        dataset: The images (identified by fingerprint and the list of kept files).
        model_config: Architecture and alpha.
        image_size: Input side in pixels.
        weights_digest: SHA-256 of the weights file.

    Returns:
        The key; equal keys mean interchangeable features.
    """
    import keras

    paths_digest = hashlib.sha256("\n".join(dataset.paths).encode()).hexdigest()[:16]
    return {
        "version": FEATURES_FORMAT_VERSION,
        "architecture": model_config.architecture,
        # Only MobileNetV2 has a width multiplier; the other backbones ignore alpha.
        "alpha": float(model_config.alpha) if model_config.architecture == "mobilenetv2" else None,
        "image_size": int(image_size),
        "weights_sha256": weights_digest,
        "dataset_fingerprint": dataset.fingerprint,
        "paths_sha256": paths_digest,
        # Default preprocessing adds nothing, so that earlier caches stay valid.
        **({"preprocessing": [dataset.resize, dataset.enhance]} if (dataset.resize, dataset.enhance) != ("stretch", "none") else {}),
        "keras": keras.__version__,
    }


def feature_cache_path(cache_dir: str | os.PathLike, key: dict) -> Path:
    """Returns the cache file for a key: features-<hash of the key>.f32 in cache_dir."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"features-{key['architecture']}-{digest}.f32"


# ---------------------------------------------------------------------------------------
# Cache file (zoidberg.arraycache): the key in the header, then raw float32 rows.
# ---------------------------------------------------------------------------------------


def write_feature_cache(path: Path, key: dict, features: np.ndarray) -> None:
    """Writes features atomically (see zoidberg.arraycache); a failure only costs speed next time.

    Args:
        path: Destination file.
        key: The cache key, stored in the header and checked on read.
        features: float32 (N, D).
    """
    write_array_file(path, {"key": key}, np.asarray(features, dtype=np.float32))


def read_feature_cache(path: Path, key: dict, n_samples: int) -> np.ndarray | None:
    """Reads and validates cached features.

    Args:
        path: The cache file.
        key: The expected key.
        n_samples: The expected number of rows.

    Returns:
        float32 (n_samples, D), or None when the file is absent, stale, truncated or corrupt.
    """

    def accept(header: dict) -> bool:
        shape = header.get("shape") or []
        return header.get("key") == key and len(shape) == 2 and shape[0] == n_samples and shape[1] > 0

    found = read_array_file(path, np.float32, accept)
    if found is None or not np.all(np.isfinite(found[1])):
        return None
    return found[1]


# ---------------------------------------------------------------------------------------
# Computing.
# ---------------------------------------------------------------------------------------


def compute_features(
    extractor,
    images: np.ndarray,
    *,
    batch_size: int = INFERENCE_BATCH_SIZE,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Runs a feature extractor over uint8 images in inference mode.

    One traced tf.function with a free batch size does the scaling and the forward pass;
    it measured faster than model.predict on this CPU (see benchmarks/transfer.py).

    Args:
        extractor: A model from build_backbone_feature_extractor.
        images: uint8 (N, S, S) grayscale images.
        batch_size: Images per forward pass.
        progress: Called as progress(done, total) after every batch.

    Returns:
        float32 (N, D) features.
    """
    import tensorflow as tf

    size = int(extractor.input.shape[1])
    spec = tf.TensorSpec((None, size, size), tf.uint8)

    # Scaling happens inside the graph exactly as in training.make_batches, so the features
    # equal what the full model computes from the same pixels.
    @tf.function(input_signature=[spec])
    def infer(batch):
        scaled = tf.cast(batch, tf.float32) * (1.0 / 255.0)
        return extractor(scaled[..., tf.newaxis], training=False)

    total = len(images)
    dimension = int(extractor.output.shape[-1])
    features = np.empty((total, dimension), dtype=np.float32)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        features[start:stop] = infer(tf.constant(images[start:stop])).numpy()
        if progress:
            progress(stop, total)
    return features


def build_feature_extractor(model_config: ModelConfig, image_size: int):
    """Builds the frozen backbone (a seam that tests replace to count backbone builds)."""
    from zoidberg.models.build import build_backbone_feature_extractor

    return build_backbone_feature_extractor(model_config, image_size)


def load_or_compute_features(
    dataset: Dataset,
    model_config: ModelConfig,
    image_size: int,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Returns the backbone's pooled features of every image of a dataset, cached on disk.

    Features depend on the backbone, alpha, image size, the weights file's content, the
    dataset's files and the Keras version; all are in the cache key. A cache file that
    is truncated, corrupt or of the wrong shape is recomputed and rewritten. A randomly
    initialised backbone (weights None) has no identity to cache under, so its features
    are computed every time.

    Args:
        dataset: Decoded images at `image_size`.
        model_config: Architecture, alpha and weights.
        image_size: Input side in pixels; must equal dataset.image_size.
        cache_dir: Cache folder; defaults to data.default_cache_dir().
        progress: Called as progress(done, total) while computing.

    Returns:
        float32 (len(dataset), D), rows in dataset order.

    Raises:
        ValueError: The dataset's image size differs from image_size.
        WeightsNotFoundError: Weights are requested but missing locally.
    """
    if dataset.images.shape[1:] != (image_size, image_size):
        raise ValueError(f"The dataset holds {dataset.images.shape[1]}-px images, not {image_size}-px ones.")
    weights_digest = weights_identity(model_config, image_size)
    path = None
    if weights_digest is not None:
        key = feature_cache_key(dataset, model_config, image_size, weights_digest)
        path = feature_cache_path(cache_dir or default_cache_dir(), key)
        cached = read_feature_cache(path, key, len(dataset))
        if cached is not None:
            return cached
    extractor = build_feature_extractor(model_config, image_size)
    features = compute_features(extractor, dataset.images, progress=progress)
    if path is not None:
        write_feature_cache(path, key, features)
    return features


# ---------------------------------------------------------------------------------------
# Training the head.
# ---------------------------------------------------------------------------------------
