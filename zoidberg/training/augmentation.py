"""Augmentation of training batches: the light policy and the acquisition policy (what differs between machines), never flips."""

from __future__ import annotations

import keras
import tensorflow as tf

AUGMENTATION_POLICIES = ("light", "acquisition")
# Acquisition policy: gamma drawn as exp(U(-r, r)) and Gaussian noise up to this sigma (on [0, 1]).
GAMMA_RANGE = 0.35
NOISE_SIGMA = 0.03


def make_augmentation(policy: str = "light"):
    """Returns the augmentation of training batches (float [0, 1] images), never flips.

    Flips are left out on purpose: the heart sits on the left, and a mirrored chest film is
    not a plausible radiograph.

    Args:
        policy: "light" (small rotation, zoom, shift and contrast) or "acquisition" (what
            differs between machines and hospitals: random crops, brightness, contrast and
            gamma, slight blur and noise, plus small rotations and shifts).

    Returns:
        A callable `augment(batch) -> batch` for the tf.data pipeline.
    """
    if policy == "light":
        light = keras.Sequential(
            [
                keras.layers.RandomRotation(0.03, fill_mode="constant"),
                keras.layers.RandomZoom(0.08, fill_mode="constant"),
                keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant"),
                keras.layers.RandomContrast(0.15),
            ],
            name="xray_augmentation",
        )
        return lambda batch: light(batch, training=True)
    if policy != "acquisition":
        raise ValueError(f"augmentation_policy must be one of {', '.join(AUGMENTATION_POLICIES)}, not {policy!r}.")
    geometry = keras.Sequential(
        [
            keras.layers.RandomRotation(0.03, fill_mode="constant"),
            # Zooming in by up to a quarter, then shifting: a random resized crop of 75-100 %.
            keras.layers.RandomZoom((-0.25, 0.0), fill_mode="constant"),
            keras.layers.RandomTranslation(0.06, 0.06, fill_mode="constant"),
            keras.layers.RandomBrightness(0.15, value_range=(0.0, 1.0)),
            keras.layers.RandomContrast(0.3, value_range=(0.0, 1.0)),
            keras.layers.RandomGaussianBlur(factor=0.5, kernel_size=3, sigma=0.8, value_range=(0.0, 1.0)),
        ],
        name="acquisition_augmentation",
    )

    def augment(batch):
        batch = tf.clip_by_value(geometry(batch, training=True), 0.0, 1.0)
        count = tf.shape(batch)[0]
        gamma = tf.exp(tf.random.uniform((count, 1, 1, 1), -GAMMA_RANGE, GAMMA_RANGE))
        batch = tf.pow(tf.maximum(batch, 1e-6), gamma)
        sigma = tf.random.uniform((count, 1, 1, 1), 0.0, NOISE_SIGMA)
        return batch + tf.random.normal(tf.shape(batch)) * sigma

    return augment
