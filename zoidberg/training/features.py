"""Frozen-backbone fast path: backbone features computed once, cached on disk, and a head trained on them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from zoidberg.config import ModelConfig, TrainConfig
from zoidberg.data.arraycache import read_array_file, write_array_file
from zoidberg.data.dataset import Dataset, default_cache_dir

FEATURES_FORMAT_VERSION = 2
# Batch size of the one-off backbone pass: on a 2-core CPU, 16 images per call ran MobileNetV2
# 1.5-2x faster than 32 or 64 (activations stay in cache) and beat model.predict.
INFERENCE_BATCH_SIZE = 16
AUGMENTATION_IGNORED = (
    "Augmentation is ignored in frozen-backbone mode: the backbone's features are computed "
    "once per image and cached, so the head always sees unaugmented images. Use fine-tune "
    "or end-to-end mode to train with augmentation."
)

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


def make_feature_batches(
    features, labels: np.ndarray, indices: np.ndarray, batch_size: int, *, shuffle: bool = False, random_state: int = 0
):
    """Builds a batched tf.data.Dataset of (features, labels) gathered by index.

    Args:
        features: float32 (N, D) array or tensor.
        labels: int labels (N,).
        indices: Which rows to use.
        batch_size: Batch size.
        shuffle: Reshuffle every epoch.
        random_state: Shuffle seed.

    Returns:
        The dataset.
    """
    import tensorflow as tf

    selected = np.asarray(indices, dtype=np.int64)
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.asarray(features, dtype=np.float32)[selected], np.asarray(labels, dtype=np.int32)[selected])
    )
    if shuffle:
        dataset = dataset.shuffle(len(selected), seed=random_state, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def train_head_on_features(
    model_config: ModelConfig,
    train_config: TrainConfig,
    features: np.ndarray,
    labels: np.ndarray,
    train_indices: np.ndarray,
    validation_indices: np.ndarray,
    *,
    num_classes: int,
    callbacks=(),
    random_state: int = 0,
    verbose: int = 0,
):
    """Trains a fresh classifier head on cached backbone features.

    Same optimizer, loss, metric names (loss, accuracy, auc and their val_ forms), class
    weighting and early stopping as training.train_model, so run events and histories
    look the same. Augmentation is ignored (see AUGMENTATION_IGNORED).

    Args:
        model_config: Architecture and head hyperparameters (dropout).
        train_config: Optimizer, epochs, batch size, patience, class weighting.
        features: float32 (N, D) features.
        labels: int labels (N,).
        train_indices: Rows to train on.
        validation_indices: Rows for per-epoch validation and early stopping.
        num_classes: Number of classes.
        callbacks: Extra Keras callbacks (e.g. the run-store callback).
        random_state: Seed for the head's weights and shuffling.
        verbose: Keras fit verbosity.

    Returns:
        The trained head (from models.build_head) and the history {metric: [per epoch]}.
    """
    import keras

    from zoidberg.models.build import build_head, compile_model
    from zoidberg.training.pipeline import balanced_class_weights, learning_rate_schedule, make_early_stopping

    keras.utils.set_random_seed(random_state)
    head = build_head(model_config, int(features.shape[1]), num_classes)
    compile_model(head, train_config, num_classes)
    train_data = make_feature_batches(
        features, labels, train_indices, train_config.batch_size, shuffle=True, random_state=random_state
    )
    validation_data = make_feature_batches(features, labels, validation_indices, train_config.batch_size)
    balanced = train_config.class_weighting == "balanced"
    class_weight = balanced_class_weights(labels[train_indices], num_classes) if balanced else None
    all_callbacks = [*callbacks, *learning_rate_schedule(train_config, train_config.learning_rate, 0, train_config.epochs)]
    early_stopping = make_early_stopping(train_config.early_stopping_patience)
    if early_stopping is not None:
        all_callbacks.append(early_stopping)
    # The tf.data pipeline already shuffles; shuffle=False keeps Keras from warning about it.
    history = head.fit(
        train_data,
        epochs=train_config.epochs,
        validation_data=validation_data,
        class_weight=class_weight,
        callbacks=all_callbacks,
        verbose=verbose,
        shuffle=False,
    ).history
    return head, {key: [float(value) for value in values] for key, values in history.items()}


def head_probabilities(head, features: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Returns class probabilities (len(indices), num_classes) of a head on cached features.

    A binary sigmoid head gives columns (1 - p, p), as training.predict_probabilities.
    """
    from zoidberg.training.pipeline import as_class_probabilities

    selected = np.asarray(features, dtype=np.float32)[np.asarray(indices, dtype=np.int64)]
    return as_class_probabilities(np.asarray(head(selected, training=False)))


class FrozenBackbone:
    """Cached features of a run's pooled images plus the one full model their heads go into.

    Building a full MobileNetV2 and loading its weights file takes seconds, so the full model
    is built once per run and each fold's trained head is copied into it before saving;
    the backbone weights never change, so every fold's saved file is still complete.

    Args:
        model_config: The frozen-mode configuration.
        image_size: Input side in pixels.
        num_classes: Number of classes.
        features: float32 (N, D) features, one row per pooled image.
    """

    def __init__(self, model_config: ModelConfig, image_size: int, num_classes: int, features: np.ndarray):
        self.model_config = model_config
        self.image_size = image_size
        self.num_classes = num_classes
        self.features = features
        self._full_model = None

    def train_head(
        self,
        train_config: TrainConfig,
        labels: np.ndarray,
        train_indices: np.ndarray,
        validation_indices: np.ndarray,
        **kwargs,
    ):
        """Trains a fresh head on the cached features; see train_head_on_features.

        Returns:
            The trained head and its history.
        """
        return train_head_on_features(
            self.model_config,
            train_config,
            self.features,
            labels,
            train_indices,
            validation_indices,
            num_classes=self.num_classes,
            **kwargs,
        )

    def probabilities(self, head, indices: np.ndarray) -> np.ndarray:
        """Returns the head's class probabilities (len(indices), num_classes) for pooled rows."""
        return head_probabilities(head, self.features, indices)

    def fresh_model(self, head):
        """Returns a new full flat model with `head`'s weights, to train further (fine-tune mode)."""
        from zoidberg.models.build import assemble_frozen_model

        return assemble_frozen_model(self.model_config, self.image_size, self.num_classes, head)

    def full_model(self, head):
        """Returns the full flat model (backbone and `head`'s weights), ready to save.

        The same model object is returned for every fold, holding the latest head's weights.
        """
        if self._full_model is None:
            from zoidberg.models.build import assemble_frozen_model

            self._full_model = assemble_frozen_model(self.model_config, self.image_size, self.num_classes, head)
            return self._full_model
        for layer in head.layers:
            if layer.weights:
                self._full_model.get_layer(layer.name).set_weights(layer.get_weights())
        return self._full_model
