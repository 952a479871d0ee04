"""Architecture registry, flat graphs, safe saving, weights resolution and transfer modes."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from zoidberg.config import ModelConfig, TrainConfig
from zoidberg.models import build as models
from zoidberg.models.build import (
    assemble_frozen_model,
    build_backbone_feature_extractor,
    build_head,
    build_model,
    check_model_config,
    compile_model,
)
from zoidberg.models.layers import (
    backbone_layer_names,
    count_parameters,
    estimate_flops,
    last_conv_layer_name,
    unfreeze_top_layers,
)
from zoidberg.options.registry import ARCHITECTURES, cnn_min_image_size
from zoidberg.models.weights import WeightsNotFoundError, resolve_imagenet_weights
from conftest import SHARED_WEIGHTS


MOBILENET_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
EXPECTED_LAST_CONV = {
    "cnn": "block2_conv",
    "mobilenetv2": "out_relu",
    "efficientnetb0": "top_activation",
    "resnet50v2": "post_relu",
    "densenet121": "relu",
}


@pytest.fixture(autouse=True)
def offline_weights_dirs(tmp_path, monkeypatch):
    """Seeds Keras and points both weights folders at empty temporary ones."""
    keras.utils.set_random_seed(7)
    monkeypatch.setenv("ZOIDBERG_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))


def small_config(architecture: str, **changes) -> ModelConfig:
    """Returns a config that builds at the architecture's minimum size (2 CNN blocks at 16 px)."""
    if architecture == "cnn":
        changes = {"conv_blocks": 2, "base_filters": 8, "dense_units": 16, **changes}
    return ModelConfig(architecture=architecture, **changes)


def random_images(count: int, size: int) -> np.ndarray:
    """Returns float32 gray images in [0, 1]."""
    return np.random.default_rng(0).random((count, size, size, 1), dtype=np.float32)


def write_legacy_weights(model: keras.Model, path: Path) -> Path:
    """Writes a model's weights in the legacy .h5 layout of the official Keras files."""
    h5py = pytest.importorskip("h5py")
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return path


@pytest.fixture
def fake_mobilenet_weights(tmp_path) -> Path:
    """A random MobileNetV2 (alpha 0.35) no-top weights file standing in for ImageNet's."""
    source = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
    return write_legacy_weights(source, tmp_path / "fake_mobilenet_v2_0.35.h5")


def test_hyperparameters_name_modelconfig_fields_with_valid_defaults():
    fields = {field.name for field in dataclasses.fields(ModelConfig)}
    for spec in ARCHITECTURES.values():
        assert spec.name in ARCHITECTURES and spec.label and spec.description
        defaults = {}
        for parameter in spec.hyperparameters:
            assert parameter.name in fields, parameter.name
            assert parameter.help, parameter.name
            if parameter.kind in ("int", "float"):
                assert parameter.min_value <= parameter.default <= parameter.max_value, parameter.name
            if parameter.kind == "choice":
                assert parameter.default in parameter.choices
            defaults[parameter.name] = parameter.default
        ModelConfig(architecture=spec.name, **defaults)


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_every_architecture_builds_flat_at_min_size(architecture):
    spec = ARCHITECTURES[architecture]
    size = spec.min_image_size
    images = random_images(2, size)
    for num_classes in (2, 3):
        model = build_model(small_config(architecture), size, num_classes)
        assert model.input.shape[1:] == (size, size, 1)
        assert model.layers[0].name == "image"
        output_layer = model.get_layer("predictions")
        expected_units = 1 if num_classes == 2 else 3
        assert model.output.shape[1:] == (expected_units,)
        assert output_layer.activation.__name__ == ("sigmoid" if num_classes == 2 else "softmax")
        assert not [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
        assert not [layer.name for layer in model.layers if isinstance(layer, keras.layers.Lambda)]
        conv_name = last_conv_layer_name(model)
        assert conv_name == EXPECTED_LAST_CONV[architecture]
        assert len(model.get_layer(conv_name).output.shape) == 4
        probabilities = model(images, training=False).numpy()
        assert probabilities.shape == (2, expected_units)
        assert np.all((probabilities >= 0) & (probabilities <= 1))
        if num_classes == 3:
            np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("architecture", ["cnn", "mobilenetv2"])
def test_saved_model_loads_with_safe_mode_and_predicts_identically(architecture, tmp_path):
    spec = ARCHITECTURES[architecture]
    model = build_model(small_config(architecture, batch_norm=True), spec.min_image_size, 2)
    images = random_images(3, spec.min_image_size)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(model(images, training=False).numpy(), loaded(images, training=False).numpy())
    assert last_conv_layer_name(loaded) == last_conv_layer_name(model)
    assert backbone_layer_names(loaded) == backbone_layer_names(model)


@pytest.mark.parametrize("preprocessing", ["tf", "torch", "efficientnet"])
@pytest.mark.parametrize("pretrained", [False, True])
def test_preprocessing_layers_save_and_load_with_safe_mode(preprocessing, pretrained, tmp_path):
    """The backbones' own layers are stock Keras; the layers added before them must round-trip too."""
    image = keras.Input((8, 8, 1), name="image")
    model = keras.Model(image, models._add_preprocessing(image, preprocessing, pretrained))
    assert all(layer.name.startswith("preprocess_") for layer in model.layers[1:])
    assert model.output.shape[-1] == (3 if pretrained else 1)
    model.save(tmp_path / "preprocessing.keras")
    loaded = keras.models.load_model(tmp_path / "preprocessing.keras", safe_mode=True)
    images = random_images(2, 8)
    np.testing.assert_allclose(loaded(images).numpy(), model(images).numpy(), rtol=1e-6)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_compile_model_logs_loss_accuracy_auc_with_validation(num_classes, tmp_path):
    model = compile_model(build_model(small_config("cnn"), 16, num_classes), TrainConfig(optimizer="sgd"), num_classes)
    labels = np.arange(8) % num_classes
    images = random_images(8, 16)
    history = model.fit(images, labels, validation_data=(images, labels), epochs=1, batch_size=4, verbose=0).history
    assert set(history) == {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"}
    assert all(np.isfinite(values[0]) for values in history.values())
    if num_classes > 2:
        # The multiclass AUC is a registered subclass, so a compiled model still loads safely.
        model.save(tmp_path / "compiled.keras")
        loaded = keras.models.load_model(tmp_path / "compiled.keras", safe_mode=True)
        results = loaded.evaluate(images, labels, verbose=0, return_dict=True)
        assert set(results) == {"loss", "accuracy", "auc"}


def test_label_smoothing_moves_the_targets_and_smoothed_models_load_safely(tmp_path):
    binary = compile_model(build_model(small_config("cnn"), 16, 2), TrainConfig(label_smoothing=0.2), 2)
    # Target 1 becomes 0.9 (= 1 - 0.2 + 0.2 / 2): the loss of p = 0.9 is its entropy.
    expected = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    assert float(binary.loss(np.array([[1.0]]), np.array([[0.9]]))) == pytest.approx(expected, rel=1e-5)
    three = compile_model(build_model(small_config("cnn"), 16, 3), TrainConfig(label_smoothing=0.3), 3)
    # Class 0 with s = 0.3 over 3 classes: targets (0.8, 0.1, 0.1).
    expected = -(0.8 * np.log(0.7) + 0.1 * np.log(0.2) + 0.1 * np.log(0.1))
    assert float(three.loss(np.array([0]), np.array([[0.7, 0.2, 0.1]]))) == pytest.approx(expected, rel=1e-5)
    assert compile_model(build_model(small_config("cnn"), 16, 2), TrainConfig(), 2).loss == "binary_crossentropy"
    images, labels = random_images(6, 16), np.arange(6) % 3
    three.fit(images, labels, epochs=1, batch_size=3, verbose=0)
    three.save(tmp_path / "smoothed.keras")
    loaded = keras.models.load_model(tmp_path / "smoothed.keras", safe_mode=True)
    assert np.isfinite(loaded.evaluate(images, labels, verbose=0, return_dict=True)["loss"])
    with pytest.raises(ValueError, match="label_smoothing must be at least 0 and at most 0.3"):
        TrainConfig(label_smoothing=0.5)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_build_optimizer_by_name(optimizer):
    built = models.build_optimizer(optimizer, 0.01)
    assert float(keras.ops.convert_to_numpy(built.learning_rate)) == pytest.approx(0.01)


def test_check_model_config_rejects_blocks_that_do_not_fit():
    with pytest.raises(ValueError, match="3 conv blocks with kernel 7 need at least 50 px"):
        check_model_config(ModelConfig(conv_blocks=3, kernel_size=7), 32)
    with pytest.raises(ValueError, match="at least 50 px"):
        build_model(ModelConfig(conv_blocks=3, kernel_size=7), 49, 2)
    check_model_config(ModelConfig(conv_blocks=3, kernel_size=7), 50)
    build_model(ModelConfig(conv_blocks=3, kernel_size=7, base_filters=8), 50, 2)
    assert cnn_min_image_size(3, 3) == 22
    assert cnn_min_image_size(5, 7) == 218


def test_check_model_config_rejects_small_images_and_unknown_alpha():
    with pytest.raises(ValueError, match="at least 32 px"):
        check_model_config(ModelConfig(architecture="mobilenetv2"), 24)
    with pytest.raises(ValueError, match="alpha"):
        check_model_config(ModelConfig(architecture="mobilenetv2", alpha=0.6, weights="imagenet"), 64)
    with pytest.raises(ValueError, match="num_classes"):
        build_model(ModelConfig(), 64, 1)


@pytest.mark.parametrize(
    ("architecture", "file_name"),
    [
        ("mobilenetv2", MOBILENET_035),
        ("efficientnetb0", "efficientnetb0_notop.h5"),
        ("resnet50v2", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("densenet121", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ],
)
def test_missing_imagenet_weights_fail_fast_naming_the_file(architecture, file_name):
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match=file_name.replace(".", r"\.")) as raised:
        resolve_imagenet_weights(architecture, 0.35, "imagenet", image_size=64)
    assert "ZOIDBERG_WEIGHTS_DIR" in str(raised.value) and "keras-home" in str(raised.value)
    with pytest.raises(WeightsNotFoundError):
        build_model(ModelConfig(architecture=architecture, alpha=0.35, weights="imagenet"), 64, 2)
    assert time.perf_counter() - start < 2.0


def test_resolve_weights_none_path_and_search_order(tmp_path, monkeypatch):
    assert resolve_imagenet_weights("mobilenetv2", 1.0, None) is None
    assert resolve_imagenet_weights("mobilenetv2", 1.0, "none") is None
    with pytest.raises(WeightsNotFoundError, match="not found"):
        resolve_imagenet_weights("mobilenetv2", 1.0, str(tmp_path / "absent.h5"))
    folder = tmp_path / "weights"
    folder.mkdir()
    for rows in (128, 224):
        (folder / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_{rows}_no_top.h5").write_bytes(b"")
    monkeypatch.setenv("ZOIDBERG_WEIGHTS_DIR", str(folder))
    assert resolve_imagenet_weights("mobilenetv2", 0.5, "imagenet", image_size=128).endswith("_0.5_128_no_top.h5")
    assert resolve_imagenet_weights("mobilenetv2", 0.5, "imagenet", image_size=64).endswith("_0.5_224_no_top.h5")
    # One signature only: an image size in the weights' place is a missing file, not a silent swap.
    with pytest.raises(WeightsNotFoundError, match="Weights file 128 not found"):
        resolve_imagenet_weights("mobilenetv2", 0.5, 128, "imagenet")
    explicit = folder / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
    assert resolve_imagenet_weights("mobilenetv2", 0.5, str(explicit)) == str(explicit.resolve())


def test_real_mobilenet_imagenet_weights_load_through_gray_to_rgb(monkeypatch):
    if not (SHARED_WEIGHTS / MOBILENET_035).is_file():
        pytest.skip(f"{SHARED_WEIGHTS / MOBILENET_035} is absent")
    monkeypatch.setenv("ZOIDBERG_WEIGHTS_DIR", str(SHARED_WEIGHTS))
    config = ModelConfig(architecture="mobilenetv2", alpha=0.35, weights="imagenet", transfer_mode="frozen")
    model = build_model(config, 64, 2)
    assert isinstance(model.get_layer("preprocess_gray_to_rgb"), keras.layers.Concatenate)
    assert model.get_layer("Conv1").kernel.shape == (3, 3, 3, 16)
    reference = keras.applications.MobileNetV2(
        input_shape=(64, 64, 3), alpha=0.35, include_top=False, weights=str(SHARED_WEIGHTS / MOBILENET_035)
    )
    np.testing.assert_array_equal(model.get_layer("Conv1").kernel.numpy(), reference.get_layer("Conv1").kernel.numpy())
    images = random_images(2, 64)
    features = keras.Model(model.input, model.get_layer("features").output)(images, training=False).numpy()
    expected = reference(np.repeat(images * 2.0 - 1.0, 3, axis=-1), training=False).numpy().mean(axis=(1, 2))
    np.testing.assert_allclose(features, expected, atol=1e-5)


def test_efficientnet_file_weights_see_imagenet_normalized_input(tmp_path, monkeypatch):
    """Keras adds a 1/sqrt(std) Rescaling only for weights="imagenet"; the input side must make up for it.

    The official file stores the ImageNet std as the Normalization "variance", so with that
    Rescaling the stem sees (rgb - mean) / std; loading the file by path must give the same.
    """
    source = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    normalization = next(layer for layer in source.layers if isinstance(layer, keras.layers.Normalization))
    normalization.set_weights([np.array(models.IMAGENET_MEAN_RGB), np.array(models.IMAGENET_STD_RGB), np.array(0)])
    folder = tmp_path / "weights"
    folder.mkdir()
    write_legacy_weights(source, folder / "efficientnetb0_notop.h5")
    monkeypatch.setenv("ZOIDBERG_WEIGHTS_DIR", str(folder))
    model = build_model(ModelConfig(architecture="efficientnetb0", weights="imagenet"), 32, 2)
    normalization_name = next(layer.name for layer in model.layers if isinstance(layer, keras.layers.Normalization))
    images = random_images(2, 32)
    stem_input = keras.Model(model.input, model.get_layer(normalization_name).output)(images).numpy()
    expected = (np.repeat(images, 3, axis=-1) - np.array(models.IMAGENET_MEAN_RGB)) / np.array(models.IMAGENET_STD_RGB)
    np.testing.assert_allclose(stem_input, expected, atol=1e-4)


def test_frozen_mode_freezes_backbone_and_unfreeze_keeps_batchnorm_frozen(fake_mobilenet_weights):
    config = ModelConfig(
        architecture="mobilenetv2", alpha=0.35, weights=str(fake_mobilenet_weights), transfer_mode="fine-tune"
    )
    model = build_model(config, 32, 2)
    backbone = backbone_layer_names(model)
    assert backbone[0] == "Conv1" and backbone[-1] == "out_relu"
    assert not any(model.get_layer(name).trainable for name in backbone)
    assert model.get_layer("predictions").trainable
    assert count_parameters(model)["trainable"] == 1280 + 1
    unfrozen = unfreeze_top_layers(model, 10)
    top = backbone[-10:]
    assert unfrozen and set(unfrozen) <= set(top)
    for name in backbone:
        layer = model.get_layer(name)
        expected = name in top and not isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable == expected, name
    assert count_parameters(model)["trainable"] > 1281


def test_assemble_frozen_model_equals_extractor_then_head(fake_mobilenet_weights):
    config = ModelConfig(
        architecture="mobilenetv2", alpha=0.35, weights=str(fake_mobilenet_weights), transfer_mode="frozen"
    )
    extractor = build_backbone_feature_extractor(config, 32)
    assert not extractor.trainable_weights
    head = build_head(config, int(extractor.output.shape[-1]), 3)
    for layer in head.layers:
        if layer.weights:
            layer.set_weights([np.random.default_rng(1).normal(size=weight.shape) for weight in layer.get_weights()])
    images = random_images(3, 32)
    expected = head(extractor(images, training=False), training=False).numpy()
    model = assemble_frozen_model(config, 32, 3, head)
    np.testing.assert_allclose(model(images, training=False).numpy(), expected, atol=1e-5)


def test_assemble_copies_backbone_from_extractor_without_weights_file():
    config = small_config("cnn")
    extractor = build_backbone_feature_extractor(config, 16)
    head = build_head(config, int(extractor.output.shape[-1]), 2)
    images = random_images(2, 16)
    model = assemble_frozen_model(config, 16, 2, head, feature_extractor=extractor)
    np.testing.assert_allclose(
        model(images, training=False).numpy(), head(extractor(images, training=False)).numpy(), atol=1e-6
    )


def test_count_parameters_and_analytic_flops():
    config = ModelConfig(conv_blocks=1, base_filters=8, kernel_size=3, dense_units=16)
    model = build_model(config, 16, 2)
    # Conv 3x3x1x8 (+8), Dense 7*7*8 -> 16 (+16), Dense 16 -> 1 (+1).
    total = (72 + 8) + (392 * 16 + 16) + (16 + 1)
    assert count_parameters(model) == {"total": total, "trainable": total, "non_trainable": 0}
    # 2 FLOPs per multiply-add: conv 14x14 positions x 72, then the two Dense layers.
    assert estimate_flops(model) == 2 * (14 * 14 * 72 + 392 * 16 + 16)
    mobilenet = build_model(ModelConfig(architecture="mobilenetv2"), 224, 2)
    assert 5.5e8 < estimate_flops(mobilenet) < 6.5e8  # MobileNetV2 1.0 is ~300M multiply-adds.
