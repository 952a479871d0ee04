"""Test-time augmentation: mild variants of an image, scored and averaged (never flips: the heart is on the left)."""

from __future__ import annotations

import tensorflow as tf

# Test-time augmentation: mild variants of what the model saw, averaged; never flips.
TTA_VARIANTS = ("identity", "zoom", "darker", "brighter")
TTA_ZOOM = 0.9  # The central share kept by the zoom variant, resized back to the square.
TTA_GAMMA = 0.15  # The darker and brighter variants raise [0, 1] pixels to 1 ± this.


def tta_variants(batch: tf.Tensor) -> list[tf.Tensor]:
    """Returns the test-time variants of a float (N, S, S, 1) batch in [0, 1], identity first.

    Args:
        batch: Images as the model takes them.

    Returns:
        One batch per name of TTA_VARIANTS.
    """
    size = tf.shape(batch)[1:3]
    zoomed = tf.image.resize(tf.image.central_crop(batch, TTA_ZOOM), size, method="bilinear")
    safe = tf.maximum(batch, 1e-6)
    return [batch, zoomed, tf.pow(safe, 1.0 + TTA_GAMMA), tf.pow(safe, 1.0 - TTA_GAMMA)]
