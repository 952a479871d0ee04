"""One traced forward pass over a run's fold models: every fold at once, or a frozen backbone once for all fold heads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Images per forward pass when scoring many: large enough to amortize the call, small
# enough that activations stay in cache on a CPU.
SCORING_BATCH_SIZE = 32


class FastPredictor:
    """Calls every model in one tf.function; model.predict costs ~50 ms per call on CPU.

    Attributes:
        models: The models, in output order.
        image_size: Square input side in pixels.
        output_dim: Units of each model's output.
    """

    def __init__(self, models: Sequence):
        import tensorflow as tf

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
        import tensorflow as tf

        return tf.stack([model(images, training=False) for model in self.models], axis=0)

    def __call__(self, image_batch) -> np.ndarray:
        """Predicts a batch.

        Args:
            image_batch: float32 (N, S, S, 1) in [0, 1]; (N, S, S) is accepted too.

        Returns:
            float32 probabilities (n_models, N, output_dim).
        """
        import tensorflow as tf

        images = np.asarray(image_batch, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., np.newaxis]
        return self._predict(tf.constant(images)).numpy()

    def warm_up(self) -> None:
        """Traces the function once with a one-image batch so the first real call is fast."""
        self(np.zeros((1, self.image_size, self.image_size, 1), dtype=np.float32))


def make_fast_predictor(models: Sequence, warm_up: bool = True) -> FastPredictor:
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


class FrozenForward:
    """One traced call for frozen-backbone runs: the shared backbone once, then every fold's head.

    The fold models of a frozen run share their backbone (it never trained), so running it
    once per image instead of once per fold divides the work by the number of folds.

    Args:
        models: The fold models (full flat models with a "features" layer).
        model_config: The run's ModelConfig (to build the heads).
        num_classes: Number of classes.
    """

    def __init__(self, models: Sequence, model_config, num_classes: int):
        import keras
        import tensorflow as tf

        from zoidberg.models.build import build_head
        from zoidberg.models.layers import FEATURES_NAME

        first = models[0]
        self.extractor = keras.Model(first.input, first.get_layer(FEATURES_NAME).output)
        dimension = int(self.extractor.output.shape[-1])
        self.heads = []
        for model in models:
            head = build_head(model_config, dimension, num_classes)
            for layer in head.layers:
                if layer.weights:
                    layer.set_weights(model.get_layer(layer.name).get_weights())
            self.heads.append(head)
        size = tuple(first.input.shape[1:])
        self.image_size = int(size[0])
        spec = tf.TensorSpec((None, *size), tf.float32)
        self._forward = tf.function(self._stacked, input_signature=[spec], reduce_retracing=True)
        self._heads_only = tf.function(self._stacked_heads, input_signature=[tf.TensorSpec((None, dimension), tf.float32)])
        # The gate's feature stage reads the backbone alone; called eagerly it costs ~150 ms an image here, traced ~10 ms.
        self._features = tf.function(lambda images: self.extractor(images, training=False), input_signature=[spec], reduce_retracing=True)

    def features_of(self, image_batch) -> np.ndarray:
        """(N, S, S, 1) float32 images -> (N, D) pooled backbone features, through a traced call."""
        import tensorflow as tf

        images = np.asarray(image_batch, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., np.newaxis]
        return self._features(tf.constant(images)).numpy()

    def _stacked(self, images):
        import tensorflow as tf

        features = self.extractor(images, training=False)
        return tf.stack([head(features, training=False) for head in self.heads], axis=0)

    def _stacked_heads(self, features):
        import tensorflow as tf

        return tf.stack([head(features, training=False) for head in self.heads], axis=0)

    def __call__(self, image_batch) -> np.ndarray:
        """(N, S, S, 1) float32 images -> (folds, N, output_dim)."""
        import tensorflow as tf

        images = np.asarray(image_batch, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., np.newaxis]
        return self._forward(tf.constant(images)).numpy()

    def heads_on(self, features: np.ndarray) -> np.ndarray:
        """(N, D) backbone features -> (folds, N, output_dim)."""
        import tensorflow as tf

        return self._heads_only(tf.constant(np.asarray(features, dtype=np.float32))).numpy()

    def warm_up(self) -> None:
        """Traces the call once so that the first real one is fast."""
        self(np.zeros((1, self.image_size, self.image_size, 1), dtype=np.float32))
