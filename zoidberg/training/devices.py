"""Devices for a fold: one GPU per fold child, memory growth, and mixed precision on GPUs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

PRECISIONS = ("float32", "mixed")


def gpu_for_child(index: int, visible: str | None) -> str | None:
    """The CUDA_VISIBLE_DEVICES of the index-th fold child: one of the visible GPUs, in turn (None: leave it alone).

    Args:
        index: The child's number, from 0.
        visible: The driver's CUDA_VISIBLE_DEVICES ("0,1,3"), or None when unset.
    """
    if not visible:
        return None
    gpus = [gpu.strip() for gpu in visible.split(",") if gpu.strip() and gpu.strip() != "-1"]
    return gpus[index % len(gpus)] if gpus else None


def enable_memory_growth() -> int:
    """Lets TensorFlow take GPU memory as it needs it, so that several processes can share a GPU; returns the GPU count."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # Already initialized: growth can no longer change, which is harmless here.
            pass
    return len(gpus)


@contextlib.contextmanager
def precision_policy(precision: str, *, force: bool = False) -> Iterator[bool]:
    """Builds and trains under mixed_float16 when asked for and a GPU is visible; yields whether it is on.

    On a CPU mixed precision is slower, not faster, so it stays float32 there unless `force`
    (the tests, which check that the float16 graph builds with a float32 output).
    """
    import keras
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    mixed = precision == "mixed" and (force or bool(tf.config.list_physical_devices("GPU")))
    previous = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield mixed
    finally:
        keras.mixed_precision.set_global_policy(previous)


def visible_gpus_of_driver() -> str | None:
    """The driver's CUDA_VISIBLE_DEVICES, which the fold children split among themselves."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")


@contextlib.contextmanager
def distribution_scope(devices: list[str] | None = None) -> Iterator[object | None]:
    """Trains one fold data-parallel over every GPU it sees (tf.distribute.MirroredStrategy) when it sees more than one.

    Models built and compiled inside the scope have mirrored variables, and Keras' fit splits
    each batch over the replicas. With one GPU or none this is a plain block.

    Args:
        devices: The devices to mirror over (default: the visible GPUs); the tests pass
            ["/cpu:0"] to check that the path builds and trains on a CPU.

    Yields:
        The strategy, or None when there is nothing to distribute over.
    """
    import tensorflow as tf

    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [gpu.name for gpu in gpus] if len(gpus) > 1 else []
    if not devices:
        yield None
        return
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    with strategy.scope():
        yield strategy
