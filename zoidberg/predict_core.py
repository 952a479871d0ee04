"""Low-latency prediction for one model or an ensemble through a single traced tf.function."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class FastPredictor:
    """Calls every model in one tf.function; model.predict costs ~50 ms per call on CPU.

    Attributes:
        models: The models, in output order.
        image_size: Square input side in pixels.
        output_dim: Units of each model's output.
    """

    def __init__(self, models: list[keras.Model]):
        if not models:
            raise ValueError("make_fast_predictor needs at least one model.")
        self.models = list(models)
        input_shapes = {tuple(model.input.shape[1:]) for model in self.models}
        output_dims = {int(model.output.shape[-1]) for model in self.models}
        if len(input_shapes) != 1:
            raise ValueError(f"All models must take the same input shape, not {sorted(input_shapes)}.")
        if len(output_dims) != 1:
            raise ValueError(f"All models must have the same output size, not {sorted(output_dims)}.")
        input_shape = input_shapes.pop()
        self.image_size = int(input_shape[0])
        self.output_dim = output_dims.pop()
        # A fixed signature with a free batch size traces once; no jit_compile because
        # XLA made these models 3-5x slower on the project's CPUs.
        spec = tf.TensorSpec((None, *input_shape), tf.float32)
        self._predict = tf.function(self._stacked, input_signature=[spec], reduce_retracing=True)

    def _stacked(self, images):
        """Returns (n_models, N, output_dim) outputs of every model in inference mode."""
        return tf.stack([model(images, training=False) for model in self.models], axis=0)

    def __call__(self, image_batch) -> np.ndarray:
        """Predicts a batch.

        Args:
            image_batch: float32 (N, S, S, 1) in [0, 1]; (N, S, S) is accepted too.

        Returns:
            float32 probabilities (n_models, N, output_dim).
        """
        images = np.asarray(image_batch, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., np.newaxis]
        return self._predict(tf.constant(images)).numpy()

    def warm_up(self) -> None:
        """Traces the function once with a one-image batch so the first real call is fast."""
        self(np.zeros((1, self.image_size, self.image_size, 1), dtype=np.float32))


def make_fast_predictor(models: list[keras.Model], warm_up: bool = True) -> FastPredictor:
    """Builds a callable that predicts with all models at once.

    Args:
        models: Models taking the same (S, S, 1) input and giving the same output size.
        warm_up: Trace immediately (about a second per model) instead of on the first call.

    Returns:
        `predictor(batch float32 (N, S, S, 1)) -> np.ndarray (n_models, N, output_dim)`.
    """
    predictor = FastPredictor(models)
    if warm_up:
        predictor.warm_up()
    return predictor
