"""Frozen-backbone fast path: feature cache, head training, frozen CV end to end, fine-tune unfreezing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import SHARED_WEIGHTS, write_legacy_weights

from zoidberg.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from zoidberg.data.dataset import default_cache_dir, load_dataset
from zoidberg.models.build import build_backbone_feature_extractor, build_model, compile_model
from zoidberg.runs.store import RunStore
from zoidberg.inference import features as features_module
from zoidberg.training.cv import run_cross_validation
from zoidberg.training.fold_training import load_frozen_backbone
from zoidberg.training.run_setup import config_payload
from zoidberg.inference.features import compute_features, feature_cache_path, load_or_compute_features

MOBILENET_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
SIZE = 32


@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory) -> Path:
    """A random MobileNetV2 (alpha 0.35) no-top weights file standing in for ImageNet's."""
    keras.utils.set_random_seed(5)
    source = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None)
    return write_legacy_weights(source, tmp_path_factory.mktemp("weights") / "fake_mobilenet_v2_0.35.h5")


@pytest.fixture
def real_weights(monkeypatch) -> str:
    """Points ZOIDBERG_WEIGHTS_DIR at ../shared/weights, or skips when the 0.35 file is absent."""
    if not (SHARED_WEIGHTS / MOBILENET_035).is_file():
        pytest.skip(f"{SHARED_WEIGHTS / MOBILENET_035} is absent")
    monkeypatch.setenv("ZOIDBERG_WEIGHTS_DIR", str(SHARED_WEIGHTS))
    return "imagenet"


@pytest.fixture
def best_weights(fake_weights, monkeypatch) -> str:
    """The real ImageNet weights when ../shared/weights has them, else the fake file.

    One variant keeps the suite fast; the fake file exercises the same code where the
    real weights are absent.
    """
    if (SHARED_WEIGHTS / MOBILENET_035).is_file():
        monkeypatch.setenv("ZOIDBERG_WEIGHTS_DIR", str(SHARED_WEIGHTS))
        return "imagenet"
    return str(fake_weights)


@pytest.fixture
def tiny_dataset(demo_dir):
    """The demo dataset at 32 px."""
    return load_dataset(demo_dir, image_size=SIZE)


def frozen_config(weights: str, **changes) -> ModelConfig:
    """Returns a frozen-backbone MobileNetV2 0.35 configuration."""
    return ModelConfig(
        architecture="mobilenetv2", alpha=0.35, weights=weights, transfer_mode="frozen", dropout_rate=0.2, **changes
    )


_BUILT_EXTRACTORS: dict = {}


@pytest.fixture
def counted_builds(monkeypatch) -> list:
    """Counts backbone builds made by load_or_compute_features.

    Each configuration is really built once per session (MobileNetV2 takes seconds to
    build); every call is still counted as a build.
    """
    calls = []
    real_builder = features_module.build_feature_extractor

    def counting_builder(model_config, image_size):
        calls.append(image_size)
        key = (model_config, image_size)
        if key not in _BUILT_EXTRACTORS:
            _BUILT_EXTRACTORS[key] = real_builder(model_config, image_size)
        return _BUILT_EXTRACTORS[key]

    monkeypatch.setattr(features_module, "build_feature_extractor", counting_builder)
    return calls


def test_compute_features_of_random_init_extractor_match_the_model():
    config = ModelConfig(architecture="mobilenetv2", alpha=0.35, weights=None)
    extractor = build_backbone_feature_extractor(config, SIZE)
    images = np.random.default_rng(0).integers(0, 256, size=(21, SIZE, SIZE), dtype=np.uint8)
    progress = []
    features = compute_features(extractor, images, batch_size=8, progress=lambda *pair: progress.append(pair))
    assert features.dtype == np.float32 and features.shape == (21, int(extractor.output.shape[-1]))
    assert progress[-1] == (21, 21)
    expected = extractor(images[..., None].astype(np.float32) / 255.0, training=False).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-5)


def test_second_call_hits_the_cache_without_building_the_backbone(tiny_dataset, fake_weights, counted_builds, tmp_path):
    config = frozen_config(str(fake_weights))
    first = load_or_compute_features(tiny_dataset, config, SIZE, cache_dir=tmp_path)
    second = load_or_compute_features(tiny_dataset, config, SIZE, cache_dir=tmp_path)
    assert len(counted_builds) == 1
    assert first.shape == (len(tiny_dataset), 1280) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert len(list(tmp_path.glob("features-*.f32"))) == 1
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file must be renamed away"


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "garbage"])
def test_corrupted_cache_is_recomputed_and_rewritten(tiny_dataset, fake_weights, counted_builds, tmp_path, damage):
    config = frozen_config(str(fake_weights))
    expected = load_or_compute_features(tiny_dataset, config, SIZE, cache_dir=tmp_path)
    (path,) = tmp_path.glob("features-*.f32")
    content = bytearray(path.read_bytes())
    if damage == "flip_byte":
        content[-5] ^= 0xFF
    elif damage == "truncate":
        content = content[: len(content) // 2]
    else:
        content = bytearray(b"not a feature cache")
    path.write_bytes(bytes(content))
    recomputed = load_or_compute_features(tiny_dataset, config, SIZE, cache_dir=tmp_path)
    assert len(counted_builds) == 2
    np.testing.assert_allclose(recomputed, expected, atol=1e-6)
    # The rewritten file is whole again: a third call reads it.
    load_or_compute_features(tiny_dataset, config, SIZE, cache_dir=tmp_path)
    assert len(counted_builds) == 2


def test_cache_key_follows_weights_content_size_and_alpha(tiny_dataset, fake_weights, tmp_path):
    config = frozen_config(str(fake_weights))
    digest = features_module.weights_identity(config, SIZE)
    key = features_module.feature_cache_key(tiny_dataset, config, SIZE, digest)
    copy = tmp_path / "copy.h5"
    copy.write_bytes(fake_weights.read_bytes())
    assert features_module.weights_identity(frozen_config(str(copy)), SIZE) == digest
    other_keys = [
        dict(key, weights_sha256="0" * 64),
        features_module.feature_cache_key(tiny_dataset, config, 64, digest),
        features_module.feature_cache_key(tiny_dataset, dataclasses.replace(config, alpha=0.5), SIZE, digest),
    ]
    paths = {feature_cache_path(tmp_path, candidate) for candidate in [key, *other_keys]}
    assert len(paths) == 4


def test_random_init_backbone_is_never_cached(tiny_dataset, counted_builds, tmp_path):
    config = ModelConfig(architecture="mobilenetv2", alpha=0.35, weights=None)
    load_or_compute_features(tiny_dataset, config, SIZE, cache_dir=tmp_path)
    load_or_compute_features(tiny_dataset, config, SIZE, cache_dir=tmp_path)
    assert len(counted_builds) == 2 and not list(tmp_path.iterdir())


def test_image_size_must_match_the_dataset(tiny_dataset, fake_weights, tmp_path):
    with pytest.raises(ValueError, match="32-px"):
        load_or_compute_features(tiny_dataset, frozen_config(str(fake_weights)), 64, cache_dir=tmp_path)


@pytest.fixture(scope="module")
def flat_demo_dir(demo_dir, tmp_path_factory) -> Path:
    """The demo's train and val images in the flat layout: no test split to evaluate, so faster."""
    import shutil

    root = tmp_path_factory.mktemp("flat-demo")
    for split in ("train", "val"):
        for class_dir in (demo_dir / split).iterdir():
            (root / class_dir.name).mkdir(exist_ok=True)
            for image in class_dir.iterdir():
                shutil.copy2(image, root / class_dir.name / image.name)
    return root


def frozen_run_config(demo_dir, weights: str, **train_changes) -> RunConfig:
    """Returns a 2-fold, 2-epoch frozen-backbone run at 32 px."""
    return RunConfig(
        data=DataConfig(str(demo_dir), "binary", SIZE),
        model=frozen_config(weights),
        train=TrainConfig(epochs=2, batch_size=8, early_stopping_patience=0, **train_changes),
        n_splits=2,
        random_state=3,
    )


def test_frozen_cv_end_to_end_saves_full_models_equal_to_heads(flat_demo_dir, runs_dir, best_weights, counted_builds):
    demo_dir = flat_demo_dir
    config = frozen_run_config(demo_dir, best_weights, augmentation=True)
    run = RunStore(runs_dir).create_run("cv", config_payload(config))
    lines = []
    summary = run_cross_validation(run, report=lines.append)
    assert run.state == "completed" and len(summary["folds"]) == 2
    assert len(counted_builds) == 1, "the backbone runs once for all folds"
    assert config.engine == "auto" and any("trains only its head on the cached features, here in the worker" in line for line in lines)
    events = run.events()
    types = [event["type"] for event in events]
    assert types.count("features_ready") == 1 and types.count("epoch") == 4 and types.count("fold_finished") == 2
    warnings = [event["message"] for event in events if event["type"] == "warning"]
    assert len(warnings) == 1 and "Augmentation is ignored" in warnings[0]
    assert summary["test"] is None, "the flat layout has no test split"

    from zoidberg.inference.loading import load_ensemble

    dataset = load_dataset(demo_dir, image_size=SIZE)
    ensemble = load_ensemble(run.id, runs_dir=runs_dir)
    result = ensemble.decide(ensemble.probabilities(dataset.images[0])).to_dict()
    assert 0.0 <= result["probability"] <= 1.0 and len(result["per_fold"]) == 2
    pooled_images = dataset.images[dataset.training_indices()]
    for fold, model in zip((1, 2), ensemble.models):
        stored = run.read_json(f"fold_{fold}/metrics.json")
        assert {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"} <= set(stored["history"])
        assert stored["parameters"]["trainable"] == 1280 + 1
        with np.load(run.path / f"fold_{fold}" / "oof.npz") as oof:
            batch = pooled_images[oof["indices"]][..., None].astype(np.float32) / 255.0
            full_model_output = model(batch, training=False).numpy()[:, 0]
            np.testing.assert_allclose(full_model_output, oof["probabilities"][:, 1], atol=1e-5)

    # A resumed run whose folds are all finished needs no features at all.
    assert load_frozen_backbone(run, config, dataset, dataset.training_indices(), print) is None


def test_stop_during_the_backbone_pass_leaves_no_cache(flat_demo_dir, runs_dir, fake_weights, counted_builds):
    run = RunStore(runs_dir).create_run("cv", config_payload(frozen_run_config(flat_demo_dir, str(fake_weights))))
    run.request_stop()
    result = run_cross_validation(run)
    assert result["state"] == "stopped" and run.state == "stopped"
    assert len(counted_builds) == 1 and not run.fold_metrics()
    assert not list(default_cache_dir().glob("features-*")), "a stopped backbone pass must not be cached"


def test_fine_tune_unfreezes_top_layers_and_keeps_batchnorm_frozen(tiny_dataset, best_weights):
    from zoidberg.training.pipeline import train_model

    model_config = dataclasses.replace(frozen_config(best_weights), transfer_mode="fine-tune", fine_tune_layers=12)
    train_config = TrainConfig(epochs=2, batch_size=8, early_stopping_patience=0, learning_rate=1e-2)
    indices = tiny_dataset.training_indices()
    initial = build_model(model_config, SIZE, 2)
    assert len(initial.trainable_weights) == 2, "only the head trains during warm-up"
    model, history = train_model(
        model_config, train_config, tiny_dataset.images, tiny_dataset.labels, indices[:24], indices[24:40],
        num_classes=2, image_size=SIZE,
    )
    assert len(history["loss"]) == 2
    assert len(model.trainable_weights) > 2, "fine-tuning must add backbone weights"
    trainable_backbone = {layer.name for layer in model.layers if layer.trainable and layer.weights} - {"predictions"}
    assert "Conv_1" in trainable_backbone
    for layer in model.layers:
        before = initial.get_layer(layer.name).get_weights()
        after = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
            for old, new in zip(before, after):
                np.testing.assert_array_equal(old, new, err_msg=f"{layer.name} changed")
        elif layer.name in trainable_backbone:
            assert any(not np.array_equal(old, new) for old, new in zip(before, after)), f"{layer.name} did not train"
        elif layer.weights and layer.name != "predictions":
            for old, new in zip(before, after):
                np.testing.assert_array_equal(old, new, err_msg=f"frozen {layer.name} changed")


class _StopsTraining(keras.callbacks.Callback):
    """Ends the first fit after one batch, as early stopping or a stop request would."""

    def __init__(self, by_request: bool):
        super().__init__()
        self.by_request = by_request
        self.stopped_by_request = False
        self.fits = 0

    def on_train_begin(self, logs=None):
        self.fits += 1

    def on_train_batch_end(self, batch, logs=None):
        if self.fits == 1:
            self.model.stop_training = True
            self.stopped_by_request = self.by_request


@pytest.mark.parametrize("by_request", [False, True])
def test_fine_tune_goes_on_after_early_stopping_but_not_after_a_stop_request(tiny_dataset, best_weights, by_request):
    from zoidberg.training.pipeline import fit_model, make_batches

    model_config = dataclasses.replace(frozen_config(best_weights), transfer_mode="fine-tune", fine_tune_layers=12)
    train_config = TrainConfig(epochs=4, batch_size=8, early_stopping_patience=0)
    model = compile_model(build_model(model_config, SIZE, 2), train_config, 2)
    indices = tiny_dataset.training_indices()
    batches = make_batches(tiny_dataset.images, tiny_dataset.labels, indices[:16], 8)
    stopper = _StopsTraining(by_request)
    history = fit_model(model, model_config, train_config, batches, batches, num_classes=2, callbacks=[stopper])
    if by_request:
        assert stopper.fits == 1 and len(model.trainable_weights) == 2, "a stop request must end the run frozen"
    else:
        assert stopper.fits == 2 and len(model.trainable_weights) > 2, "early stopping only ends the warm-up"
        assert len(history["loss"]) == 1 + 2  # One warm-up epoch cut short, then epochs 3 and 4.
