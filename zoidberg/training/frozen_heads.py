"""Frozen-backbone fast path: a head trained on the cached backbone features (zoidberg.inference.features)."""

from __future__ import annotations

import numpy as np

from zoidberg.config import ModelConfig, TrainConfig

AUGMENTATION_IGNORED = (
    "Augmentation is ignored in frozen-backbone mode: the backbone's features are computed "
    "once per image and cached, so the head always sees unaugmented images. Use fine-tune "
    "or end-to-end mode to train with augmentation."
)


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
    from zoidberg.inference.decisions import as_class_probabilities

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
