"""Grad-CAM, heatmap overlays and the fast tf.function predictor."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from zoidberg.config import ModelConfig
from zoidberg.inference.explain import colorize_heatmap, make_gradcam, overlay_heatmap
from zoidberg.models.build import build_model
from zoidberg.inference.forward import make_fast_predictor


@pytest.fixture(autouse=True)
def seeded_keras():
    """Seeds Keras so every model here starts from the same weights."""
    keras.utils.set_random_seed(11)


def random_images(count: int, size: int) -> np.ndarray:
    """Returns float32 gray images in [0, 1]."""
    return np.random.default_rng(3).random((count, size, size, 1), dtype=np.float32)


def small_cnn(num_classes: int = 2, size: int = 32) -> keras.Model:
    """Returns a two-block CNN."""
    return build_model(ModelConfig(conv_blocks=2, base_filters=8, dense_units=16), size, num_classes)


@pytest.mark.parametrize(
    ("architecture", "size", "num_classes"),
    [("cnn", 32, 2), ("cnn", 32, 3), ("mobilenetv2", 64, 2)],
)
def test_gradcam_heatmaps_have_layer_shape_and_unit_range(architecture, size, num_classes):
    if architecture == "cnn":
        model = small_cnn(num_classes, size)
    else:
        model = build_model(ModelConfig(architecture="mobilenetv2", alpha=0.35), size, num_classes)
    gradcam = make_gradcam(model)
    images = random_images(3, size)
    probabilities, heatmaps = gradcam(images)
    spatial = tuple(model.get_layer(gradcam.layer_name).output.shape[1:3])
    assert heatmaps.shape == (3, *spatial)
    assert heatmaps.dtype == np.float32
    assert np.all(np.isfinite(heatmaps)) and heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    np.testing.assert_allclose(probabilities, model(images, training=False).numpy(), atol=1e-5)
    _, chosen = gradcam(images, class_index=0)
    assert chosen.shape == heatmaps.shape
    assert np.all((chosen >= 0) & (chosen <= 1))


def test_gradcam_uses_logits_so_saturated_outputs_still_explain():
    model = small_cnn()
    kernel, bias = model.get_layer("predictions").get_weights()
    model.get_layer("predictions").set_weights([kernel, bias + 60.0])
    images = random_images(2, 32)
    probabilities, heatmaps = make_gradcam(model)(images)
    assert np.all(probabilities == 1.0)
    assert np.all(heatmaps.max(axis=(1, 2)) > 0)


def test_gradcam_binary_class_zero_is_the_opposite_direction():
    model = small_cnn()
    gradcam = make_gradcam(model)
    images = random_images(4, 32)
    _, positive = gradcam(images, class_index=1)
    _, default = gradcam(images)
    _, negative = gradcam(images, class_index=[0, 0, 0, 0])
    np.testing.assert_array_equal(positive, default)
    assert not np.allclose(positive, negative)


def test_overlay_heatmap_shape_and_blend():
    gray = np.random.default_rng(0).integers(0, 256, size=(50, 70), dtype=np.uint8)
    heatmap = np.random.default_rng(1).random((6, 6)).astype(np.float32)
    overlay = overlay_heatmap(gray, heatmap)
    assert overlay.shape == (50, 70, 3) and overlay.dtype == np.uint8
    np.testing.assert_array_equal(overlay_heatmap(gray, heatmap, alpha=0.0), np.repeat(gray[..., None], 3, axis=-1))
    hot = overlay_heatmap(gray, np.ones((3, 3)), alpha=1.0)
    np.testing.assert_array_equal(hot, np.broadcast_to(colorize_heatmap(np.ones((1, 1)))[0, 0], (50, 70, 3)))
    assert tuple(colorize_heatmap(np.zeros((1, 1)))[0, 0]) != tuple(colorize_heatmap(np.ones((1, 1)))[0, 0])
    with pytest.raises(ValueError):
        overlay_heatmap(gray, heatmap, colormap="rainbow-unicorn")


def test_fast_predictor_equals_calling_the_models():
    models = [small_cnn(), small_cnn()]
    predictor = make_fast_predictor(models)
    for count in (1, 5, 2):
        images = random_images(count, 32)
        outputs = predictor(images)
        assert outputs.shape == (2, count, 1)
        for index, model in enumerate(models):
            np.testing.assert_allclose(outputs[index], model(images, training=False).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(outputs[0], outputs[1])
    # One trace serves every batch size.
    assert predictor._predict.experimental_get_tracing_count() == 1


def test_fast_predictor_three_class_and_mismatched_models():
    model = small_cnn(3)
    images = random_images(2, 32)
    outputs = make_fast_predictor([model])(images[..., 0])
    assert outputs.shape == (1, 2, 3)
    np.testing.assert_allclose(outputs[0], model(images, training=False).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="output size"):
        make_fast_predictor([model, small_cnn(2)], warm_up=False)
    with pytest.raises(ValueError, match="input shape"):
        make_fast_predictor([model, small_cnn(3, size=40)], warm_up=False)
