"""Devices: mixed precision builds a float16 graph with a float32 output, only on GPUs; fold children get GPUs in turn."""

from __future__ import annotations

import pytest

from zoidberg.training.devices import gpu_for_child, precision_policy


def test_mixed_precision_builds_float16_layers_and_keeps_the_output_float32():
    import keras

    from zoidberg.config import ModelConfig
    from zoidberg.models.build import build_model
    from zoidberg.models.layers import OUTPUT_NAME

    with precision_policy("mixed", force=True) as mixed:
        assert mixed and keras.mixed_precision.global_policy().name == "mixed_float16"
        model = build_model(ModelConfig(architecture="cnn", conv_blocks=1, base_filters=4, dense_units=8), 32, 2)
    assert keras.mixed_precision.global_policy().name == "float32"
    convolution = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert convolution.compute_dtype == "float16"
    output = model.get_layer(OUTPUT_NAME)
    assert output.compute_dtype == "float32" and model.output.dtype == "float32"


def test_mixed_precision_stays_float32_on_a_cpu_and_refuses_unknown_precisions():
    import keras
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    with precision_policy("mixed") as mixed:
        assert not mixed and keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(ValueError, match="float32, mixed"):
        with precision_policy("half"):
            pass


def test_fold_children_take_the_visible_gpus_in_turn():
    assert [gpu_for_child(index, "0,2") for index in range(4)] == ["0", "2", "0", "2"]
    assert gpu_for_child(0, None) is None and gpu_for_child(1, "") is None and gpu_for_child(0, "-1") is None


def test_one_fold_trains_under_mirrored_strategy_when_it_has_devices_to_mirror_over():
    import numpy as np
    import tensorflow as tf

    from zoidberg.config import ModelConfig, TrainConfig
    from zoidberg.training.devices import distribution_scope
    from zoidberg.training.pipeline import train_model

    if len(tf.config.list_logical_devices("GPU")) <= 1:
        with distribution_scope() as strategy:
            assert strategy is None  # One GPU or none: nothing to distribute over.
    rng = np.random.default_rng(0)
    images = (rng.random((40, 32, 32)) * 255).astype(np.uint8)
    labels = rng.integers(0, 2, 40)
    # The CPU stands in for the GPUs: the same strategy code path, one replica.
    with distribution_scope(["/cpu:0"]) as strategy:
        assert isinstance(strategy, tf.distribute.MirroredStrategy)
        model, history = train_model(
            ModelConfig(architecture="cnn", conv_blocks=1, base_filters=4, dense_units=8), TrainConfig(epochs=1, batch_size=8),
            images, labels, np.arange(30), np.arange(30, 40), num_classes=2, image_size=32,
        )
    assert type(model.trainable_weights[0].value).__name__ == "MirroredVariable"
    assert np.isfinite(history["loss"][0]) and "val_auc" in history
