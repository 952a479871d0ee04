"""Grad-CAM heatmaps for the flat Functional models and their overlay on X-rays."""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from zoidberg.models.layers import OUTPUT_NAME, last_conv_layer_name


def _output_layer(model: keras.Model):
    """Returns the layer that produces the model's output."""
    try:
        return model.get_layer(OUTPUT_NAME)
    except ValueError:
        return model.layers[-1]


def _logits_source(model: keras.Model):
    """Returns (output Dense layer, activation name) when logits can be recomputed, else (None, None).

    Grad-CAM needs the pre-activation score: a saturated sigmoid or softmax probability
    has a zero gradient in float32, which would give an empty heatmap for confident
    predictions.
    """
    layer = _output_layer(model)
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    if isinstance(layer, keras.layers.Dense) and activation in ("sigmoid", "softmax"):
        return layer, activation
    return None, None


def _as_image_batch(image_batch) -> np.ndarray:
    """Returns a float32 (N, S, S, 1) array from (N, S, S) or (N, S, S, 1) input."""
    images = np.asarray(image_batch, dtype=np.float32)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[-1] != 1:
        raise ValueError(f"Expected a gray image batch (N, S, S, 1), not shape {images.shape}.")
    return images


def make_gradcam(model: keras.Model, layer_name: str | None = None) -> Callable:
    """Builds a fast Grad-CAM function for a model.

    The class score is the output layer's logit (pre-sigmoid or pre-softmax), recomputed
    from its Dense kernel: for binary models the positive ("pneumonia") logit, negated for
    class 0; for multiclass models the logit of the predicted class unless one is given.
    The gradient computation is traced once into a tf.function (no XLA).

    Args:
        model: A model from zoidberg.models (or a loaded one) with one image input.
        layer_name: Spatial layer to explain; defaults to last_conv_layer_name(model).

    Returns:
        `gradcam(image_batch, class_index=None) -> (probs, heatmaps)`: image_batch is
        float32 (N, S, S, 1) in [0, 1]; class_index is None, an int or N ints; probs is
        the model output (N, out_dim); heatmaps is float32 (N, h, w) in [0, 1] at the
        layer's resolution (all zeros where nothing supports the class).
    """
    layer_name = layer_name or last_conv_layer_name(model)
    conv_output = model.get_layer(layer_name).output
    dense_layer, activation = _logits_source(model)
    score_source = dense_layer.input if dense_layer is not None else model.output
    grad_model = keras.Model(model.input, [conv_output, score_source], name="gradcam")
    binary = int(model.output.shape[-1]) == 1
    image_spec = tf.TensorSpec((None, *model.input.shape[1:]), tf.float32)

    @tf.function(input_signature=[image_spec, tf.TensorSpec((None,), tf.int32)], reduce_retracing=True)
    def compute(images, class_index):
        with tf.GradientTape() as tape:
            conv, source = grad_model(images, training=False)
            if dense_layer is not None:
                logits = tf.matmul(source, dense_layer.kernel) + dense_layer.bias
                probs = tf.sigmoid(logits) if activation == "sigmoid" else tf.nn.softmax(logits)
            else:
                # Without a Dense output the probability itself is the score.
                probs = source
                logits = source
            if binary:
                positive = class_index != 0
                if dense_layer is not None:
                    score = tf.where(positive, logits[:, 0], -logits[:, 0])
                else:
                    score = tf.where(positive, probs[:, 0], 1.0 - probs[:, 0])
            else:
                predicted = tf.argmax(probs, axis=-1, output_type=tf.int32)
                chosen = tf.where(class_index < 0, predicted, class_index)
                score = tf.gather(logits, chosen, batch_dims=1)
        gradients = tape.gradient(score, conv)
        channel_weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        heatmaps = tf.nn.relu(tf.reduce_sum(channel_weights * conv, axis=-1))
        peak = tf.reduce_max(heatmaps, axis=(1, 2), keepdims=True)
        return probs, tf.math.divide_no_nan(heatmaps, peak)

    def gradcam(image_batch, class_index: int | np.ndarray | None = None):
        images = _as_image_batch(image_batch)
        count = images.shape[0]
        # -1 asks for the predicted class (multiclass) or the positive class (binary).
        if class_index is None:
            indices = np.full(count, -1, dtype=np.int32)
        else:
            indices = np.broadcast_to(np.asarray(class_index, dtype=np.int32), (count,)).copy()
        probs, heatmaps = compute(tf.constant(images), tf.constant(indices))
        return probs.numpy(), heatmaps.numpy()

    gradcam.layer_name = layer_name
    return gradcam


def _jet_table() -> np.ndarray:
    """Returns a 256x3 uint8 jet-like colormap (blue, cyan, yellow, red)."""
    x = np.linspace(0.0, 1.0, 256)
    red = np.clip(1.5 - np.abs(4.0 * x - 3.0), 0.0, 1.0)
    green = np.clip(1.5 - np.abs(4.0 * x - 2.0), 0.0, 1.0)
    blue = np.clip(1.5 - np.abs(4.0 * x - 1.0), 0.0, 1.0)
    return np.round(np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)


def _hot_table() -> np.ndarray:
    """Returns a 256x3 uint8 hot colormap (black, red, yellow, white)."""
    x = np.linspace(0.0, 1.0, 256)
    red = np.clip(3.0 * x, 0.0, 1.0)
    green = np.clip(3.0 * x - 1.0, 0.0, 1.0)
    blue = np.clip(3.0 * x - 2.0, 0.0, 1.0)
    return np.round(np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)


COLORMAPS = {"jet": _jet_table(), "hot": _hot_table()}


def _heatmap_indices(heatmap: np.ndarray) -> np.ndarray:
    """Quantizes a [0, 1] heatmap to uint8 colormap indices (NaN reads as 0)."""
    values = np.asarray(heatmap, dtype=np.float32)
    if not np.all(np.isfinite(values)):
        values = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _colormap_table(colormap: str) -> np.ndarray:
    """Returns the 256x3 table of a colormap, or raises ValueError."""
    if colormap not in COLORMAPS:
        raise ValueError(f"Unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}.")
    return COLORMAPS[colormap]


def colorize_heatmap(heatmap: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Maps a [0, 1] heatmap to RGB with a colormap table.

    Args:
        heatmap: 2-D float array in [0, 1].
        colormap: "jet" or "hot".

    Returns:
        uint8 array (h, w, 3).
    """
    return _colormap_table(colormap)[_heatmap_indices(heatmap)]


def overlay_heatmap(
    gray_uint8: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet"
) -> np.ndarray:
    """Blends a colorized heatmap over a grayscale X-ray.

    Args:
        gray_uint8: 2-D uint8 image (H, W); (H, W, 1) is accepted too.
        heatmap: 2-D float heatmap (h, w) in [0, 1], upsampled bilinearly to (H, W).
        alpha: Weight of the heatmap colors, 0 (image only) to 1 (heatmap only).
        colormap: "jet" or "hot".

    Returns:
        uint8 RGB array (H, W, 3).
    """
    gray = np.asarray(gray_uint8)
    if gray.ndim == 3 and gray.shape[-1] == 1:
        gray = gray[..., 0]
    if gray.ndim != 2:
        raise ValueError(f"Expected a 2-D gray image, not shape {gray.shape}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be from 0 to 1, not {alpha}.")
    table = _colormap_table(colormap)
    height, width = gray.shape
    # Upsampling in float before quantizing keeps the colour bands smooth; the palette
    # lookup and the blend then run inside Pillow, several times faster than NumPy here.
    small = Image.fromarray(np.ascontiguousarray(heatmap, dtype=np.float32))
    upsampled = np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))
    colors = Image.fromarray(_heatmap_indices(upsampled))
    colors.putpalette(table.tobytes())
    base = Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8)).convert("RGB")
    return np.array(Image.blend(base, colors.convert("RGB"), float(alpha)))


def gradcam_overlay(ensemble, gray: np.ndarray, max_side: int, alpha: float = 0.45) -> np.ndarray:
    """The model's Grad-CAM of its decided class, blended over the X-ray shrunk to `max_side`.

    Args:
        ensemble: A loaded run (zoidberg.inference.ensemble.Ensemble or EnsembleOfRuns).
        gray: The decoded grayscale image (H, W), uint8, at any size.
        max_side: The long side of the picture returned.
        alpha: Weight of the heatmap colours.

    Returns:
        uint8 RGB array.
    """
    from zoidberg.data.imaging import downscale

    model_input = ensemble.resized(gray)
    heatmap = ensemble.gradcam(model_input, ensemble.decide(ensemble.probabilities(model_input)).class_index)
    return overlay_heatmap(downscale(gray, max_side), heatmap, alpha=alpha)
