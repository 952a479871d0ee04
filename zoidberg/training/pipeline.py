"""Training one model: a tf.data pipeline over uint8 arrays, class weights, the fit sequence and its callbacks."""

from __future__ import annotations

import dataclasses
import math
import time

import keras
import numpy as np
import tensorflow as tf

from zoidberg.config import ModelConfig, TrainConfig
from zoidberg.models.build import build_model, compile_model
from zoidberg.inference.decisions import as_class_probabilities
from zoidberg.inference.tta import tta_variants
from zoidberg.models.layers import unfreeze_top_layers
from zoidberg.training.augmentation import make_augmentation
from zoidberg.training.image_rows import ImageRows

AUTOTUNE = tf.data.AUTOTUNE


def make_batches(
    images: ImageRows | np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: bool = False,
    random_state: int = 0,
    augmentation_policy: str = "light",
) -> tf.data.Dataset:
    """Builds a batched dataset that gathers uint8 images by index and scales per batch.

    The full uint8 array is held once (as a tensor) and only indices are shuffled, so
    memory stays at one byte per pixel however many folds are trained.

    Args:
        images: uint8 (N, S, S) array or tensor of all images.
        labels: int labels (N,).
        indices: Which samples to use.
        batch_size: Batch size.
        shuffle: Reshuffle every epoch.
        augment: Apply make_augmentation(augmentation_policy) to training batches.
        random_state: Shuffle and augmentation seed.
        augmentation_policy: "light" or "acquisition".

    Returns:
        A tf.data.Dataset of (float32 (B, S, S, 1) in [0, 1], labels).
    """
    rows = ImageRows.of(images)
    label_tensor = tf.constant(np.asarray(labels, dtype=np.int32))
    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int32))
    if shuffle:
        dataset = dataset.shuffle(len(indices), seed=random_state, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    def gather(batch_indices):
        batch = tf.cast(rows.gather(batch_indices), tf.float32) * (1.0 / 255.0)
        return batch[..., tf.newaxis], tf.gather(label_tensor, batch_indices)

    dataset = dataset.map(gather, num_parallel_calls=AUTOTUNE)
    if augment:
        augmentation = make_augmentation(augmentation_policy)
        dataset = dataset.map(
            lambda batch, batch_labels: (tf.clip_by_value(augmentation(batch), 0.0, 1.0), batch_labels),
            num_parallel_calls=AUTOTUNE,
        )
    return dataset.prefetch(AUTOTUNE)


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Returns n / (k * count_c) per class, as sklearn's 'balanced' weighting."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    counts[counts == 0] = 1.0
    return {index: float(len(labels) / (num_classes * count)) for index, count in enumerate(counts)}


def make_early_stopping(patience: int) -> keras.callbacks.Callback | None:
    """Returns early stopping on validation loss, or None when patience is 0."""
    if patience <= 0:
        return None
    return keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)


def make_fit_inputs(
    images: ImageRows | np.ndarray,
    labels: np.ndarray,
    train_indices: np.ndarray,
    validation_indices: np.ndarray,
    train_config: TrainConfig,
    *,
    num_classes: int,
    random_state: int,
) -> tuple[tf.data.Dataset, tf.data.Dataset, dict | None]:
    """Returns the shuffled (and augmented) training batches, the validation batches and the class weights.

    Args:
        images: uint8 (N, S, S) images.
        labels: int labels (N,).
        train_indices: Samples to train on.
        validation_indices: Samples to validate on.
        train_config: Batch size, augmentation and class weighting.
        num_classes: Number of classes.
        random_state: Seed of the shuffling and augmentation.
    """
    images = ImageRows.of(images)  # Held once for both the training and the validation batches.
    train_data = make_batches(
        images,
        labels,
        train_indices,
        train_config.batch_size,
        shuffle=True,
        augment=train_config.augmentation,
        random_state=random_state,
        augmentation_policy=train_config.augmentation_policy,
    )
    validation_data = make_batches(images, labels, validation_indices, train_config.batch_size)
    class_weight = (
        balanced_class_weights(labels[train_indices], num_classes) if train_config.class_weighting == "balanced" else None
    )
    return train_data, validation_data, class_weight


def train_model(
    model_config: ModelConfig,
    train_config: TrainConfig,
    images: ImageRows | np.ndarray,
    labels: np.ndarray,
    train_indices: np.ndarray,
    validation_indices: np.ndarray,
    *,
    num_classes: int,
    image_size: int,
    callbacks: list[keras.callbacks.Callback] | tuple = (),
    random_state: int = 0,
    verbose: int = 0,
    validation_pass=None,
) -> tuple[keras.Model, dict]:
    """Builds, compiles and trains a fresh model on `train_indices`.

    In fine-tune mode the head first trains with the backbone frozen for half the
    epochs; then the top `fine_tune_layers` backbone layers are unfrozen and training
    goes on at a tenth of the learning rate.

    Args:
        model_config: Architecture and hyperparameters.
        train_config: Optimizer, epochs, batch size and the rest.
        images: uint8 (N, S, S) images.
        labels: int labels (N,).
        train_indices: Samples to train on.
        validation_indices: Samples for per-epoch validation metrics and early stopping.
        num_classes: 2 for binary, 3 for three-class.
        image_size: Side of the images.
        callbacks: Extra Keras callbacks (e.g. the run-store callback).
        random_state: Seed for weights, shuffling and augmentation.
        verbose: Keras fit verbosity.
        validation_pass: A ValidationPass to validate with, whose kept outputs the
            caller then reads (the out-of-fold probabilities at no second pass).

    Returns:
        The trained model and a history dict {metric: [per-epoch values]}.
    """
    keras.utils.set_random_seed(random_state)
    image_rows = ImageRows.of(images)
    model = build_model(model_config, image_size, num_classes)
    compile_model(model, train_config, num_classes)
    history = fit_on_images(
        model, model_config, train_config, image_rows, labels, train_indices, validation_indices, num_classes=num_classes,
        random_state=random_state, callbacks=callbacks, verbose=verbose, validation_pass=validation_pass,
    )
    return model, history


def fit_on_images(
    model: keras.Model,
    model_config: ModelConfig,
    train_config: TrainConfig,
    images: ImageRows | np.ndarray,
    labels: np.ndarray,
    train_indices: np.ndarray,
    validation_indices: np.ndarray,
    *,
    num_classes: int,
    random_state: int,
    callbacks: list[keras.callbacks.Callback] | tuple = (),
    initial_epoch: int = 0,
    verbose: int = 0,
    validation_pass=None,
    early_stopping: bool = True,
) -> dict:
    """The one fit sequence of a fold, a trial and a plain training: its batches, early stopping, then fit_model.

    Args:
        model: A model compiled by compile_model.
        model_config: Architecture and hyperparameters (fine-tune's two phases).
        train_config: Optimizer, epochs, batch size, augmentation, class weighting, patience.
        images: uint8 (N, S, S) images, or their ImageRows.
        labels: int labels (N,).
        train_indices: Samples to train on.
        validation_indices: Samples to validate on.
        num_classes: Number of classes.
        random_state: Seed of the shuffling and augmentation.
        callbacks: Extra Keras callbacks (the run-store callback first).
        initial_epoch: The epoch to start from (a fine-tune fold after its cached warm-up, a Hyperband round).
        verbose: Keras fit verbosity.
        validation_pass: A ValidationPass whose kept outputs are the out-of-fold probabilities.
        early_stopping: Add early stopping at train_config's patience (a search leaves it to its tuner).

    Returns:
        The history {metric: [per-epoch values]}.
    """
    train_data, validation_data, class_weight = make_fit_inputs(
        images, labels, train_indices, validation_indices, train_config, num_classes=num_classes, random_state=random_state,
    )
    stopper = make_early_stopping(train_config.early_stopping_patience) if early_stopping else None
    return fit_model(
        model, model_config, train_config, train_data, validation_data, num_classes=num_classes, class_weight=class_weight,
        callbacks=[*callbacks, *([stopper] if stopper is not None else [])], initial_epoch=initial_epoch, verbose=verbose,
        validation_pass=validation_pass,
    )


def fit_model(
    model: keras.Model,
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_data: tf.data.Dataset,
    validation_data: tf.data.Dataset,
    *,
    num_classes: int,
    class_weight: dict | None = None,
    callbacks: list[keras.callbacks.Callback] | tuple = (),
    initial_epoch: int = 0,
    verbose: int = 0,
    validation_pass=None,
) -> dict:
    """Fits a compiled model for train_config.epochs, in two phases in fine-tune mode.

    In fine-tune mode the first half of the epochs trains the head with the backbone
    frozen; then the top `fine_tune_layers` backbone layers are unfrozen and training goes
    on at a tenth of the learning rate. Early stopping during the warm-up only ends the
    warm-up; a stop request (a callback's `stopped_by_request`) ends everything.

    Args:
        model: A model compiled by compile_model.
        model_config: Its architecture and transfer mode.
        train_config: Epochs, learning rate and the rest.
        train_data: Training batches.
        validation_data: Validation batches.
        num_classes: Number of classes (for recompiling).
        class_weight: Keras class weights, or None.
        callbacks: Keras callbacks, early stopping included when wanted.
        initial_epoch: First epoch to run (Hyperband continues trials).
        verbose: Keras fit verbosity.
        validation_pass: The ValidationPass to validate with (one is made when None);
            its kept outputs are the validation probabilities of the final weights.

    Returns:
        The history {metric: [per-epoch values]}.
    """
    from zoidberg.training.callbacks import ValidationPass

    # One inference pass per epoch validates and keeps the probabilities (Keras' own
    # validation_data would throw them away); it goes first so that early stopping and the
    # run-store callback read its val_* logs.
    validation_pass = validation_pass if validation_pass is not None else ValidationPass()
    validation_pass.validation_data = validation_data
    validation_pass.early_stopping = next((callback for callback in callbacks if isinstance(callback, keras.callbacks.EarlyStopping)), None)
    # The tf.data pipeline already shuffles; shuffle=False keeps Keras from warning about it.
    fit_kwargs = dict(class_weight=class_weight, verbose=verbose, shuffle=False)
    callbacks = [validation_pass, *callbacks]
    epochs = train_config.epochs
    history: dict = {}
    if model_config.transfer_mode == "fine-tune":
        warmup_epochs = max(1, epochs // 2)
        if initial_epoch < warmup_epochs:
            schedule = learning_rate_schedule(train_config, train_config.learning_rate, initial_epoch, warmup_epochs)
            history = model.fit(train_data, epochs=warmup_epochs, initial_epoch=initial_epoch, callbacks=callbacks + schedule, **fit_kwargs).history
            initial_epoch = warmup_epochs
            if initial_epoch >= epochs or any(getattr(callback, "stopped_by_request", False) for callback in callbacks):
                return _float_history(history)
        unfreeze_top_layers(model, model_config.fine_tune_layers)
        fine_tune_config = dataclasses.replace(train_config, learning_rate=train_config.learning_rate / 10)
        compile_model(model, fine_tune_config, num_classes)
        phase_start, base_rate = warmup_epochs, fine_tune_config.learning_rate
    else:
        phase_start, base_rate = 0, train_config.learning_rate
    if initial_epoch < epochs:
        schedule = learning_rate_schedule(train_config, base_rate, phase_start, epochs)
        more = model.fit(train_data, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks + schedule, **fit_kwargs).history
        history = {key: list(history.get(key, [])) + list(more.get(key, [])) for key in set(history) | set(more)}
    return _float_history(history)


def learning_rate_schedule(train_config: TrainConfig, base_rate: float, first_epoch: int, last_epoch: int) -> list:
    """The callbacks of train_config.lr_schedule over epochs [first_epoch, last_epoch): none when constant.

    Cosine decay, one value per epoch: base · ½(1 + cos(π · t / T)), from the base rate at the
    phase's first epoch towards a hundredth of it at its last.
    """
    if train_config.lr_schedule != "cosine":
        return []
    span = max(1, last_epoch - first_epoch)

    def rate(epoch: int, _current: float) -> float:
        progress = min(1.0, max(0.0, (epoch - first_epoch) / span))
        return float(base_rate * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))))

    return [keras.callbacks.LearningRateScheduler(rate)]


def _float_history(history: dict) -> dict:
    """Returns a Keras history with plain float values."""
    return {key: [float(value) for value in values] for key, values in history.items()}


def release_memory() -> None:
    """Frees what Keras and the C heap can give back before the next fold's model is built.

    clear_session drops Keras's global state and collects garbage; malloc_trim hands freed
    heap pages back to the system. This does not stop all growth: TensorFlow keeps the buffers
    of a model trained through a traced tf.function (about 150 MB per fold for the CNN at
    224 px, keras-team/keras#17458), which only a process per fold would return.
    """
    keras.backend.clear_session(free_memory=True)
    trim_native_heap()


def trim_native_heap() -> bool:
    """Returns freed C heap memory to the system (glibc's malloc_trim); False where unavailable."""
    import ctypes

    try:
        # The running process's own symbols: no library search (find_library spawns ldconfig).
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # Not glibc (musl, macOS): nothing to trim.
        return False
    malloc_trim(0)
    return True


def make_probability_function(model: keras.Model):
    """Returns a tf.function that runs the model in inference mode (much cheaper than predict)."""

    @tf.function(reduce_retracing=True)
    def infer(batch):
        return model(batch, training=False)

    return infer


def predict_probabilities(
    model: keras.Model, images: ImageRows | np.ndarray, indices: np.ndarray, batch_size: int = 64, *, tta: bool = False
) -> np.ndarray:
    """Predicts class probabilities for `indices`, optionally averaged over the TTA variants.

    Returns:
        float32 (len(indices), num_classes): for a binary sigmoid model the columns are
        (1 - p, p) so callers treat both label modes alike.
    """
    infer = make_probability_function(model)
    images = ImageRows.of(images)
    labels = np.zeros(len(images), dtype=np.int32)

    def score(batch):
        if not tta:
            return infer(batch).numpy()
        return np.mean([infer(variant).numpy() for variant in tta_variants(batch)], axis=0)

    outputs = [score(batch) for batch, _ in make_batches(images, labels, indices, batch_size)]
    probabilities = np.concatenate(outputs) if outputs else np.zeros((0, 1), dtype=np.float32)
    return as_class_probabilities(probabilities)


class Stopwatch:
    """Measures wall time of a block."""

    def __enter__(self):
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False
