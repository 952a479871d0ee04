"""Devices: mixed precision builds a float16 graph with a float32 output, only on GPUs; fold children get GPUs in turn."""

from __future__ import annotations

import pytest

from zoidberg.training.devices import gpu_for_child, precision_policy


def test_mixed_precision_builds_float16_layers_and_keeps_the_output_float32():
    import keras

    from zoidberg.config import ModelConfig
    from zoidberg.models.build import build_model
    from zoidberg.models.layers import OUTPUT_NAME

    with precision_policy("mixed", force="mixed_float16") as policy:
        assert policy == "mixed_float16" and keras.mixed_precision.global_policy().name == "mixed_float16"
        model = build_model(ModelConfig(architecture="cnn", conv_blocks=1, base_filters=4, dense_units=8), 32, 2)
    assert keras.mixed_precision.global_policy().name == "float32"
    convolution = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert convolution.compute_dtype == "float16"
    output = model.get_layer(OUTPUT_NAME)
    assert output.compute_dtype == "float32" and model.output.dtype == "float32"


def test_mixed_precision_on_a_cpu_is_bfloat16_where_it_has_it_else_float32(monkeypatch):
    import keras
    import tensorflow as tf

    from zoidberg.training import devices

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(devices, "cpu_has_bfloat16", lambda: False)
    with precision_policy("mixed") as policy:
        assert policy is None and keras.mixed_precision.global_policy().name == "float32"
    assert "training in float32" in devices.describe_precision(policy)
    monkeypatch.setattr(devices, "cpu_has_bfloat16", lambda: True)
    with precision_policy("mixed") as policy:
        assert policy == "mixed_bfloat16" and keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert "bfloat16 on this CPU" in devices.describe_precision(policy)
    with precision_policy("float32") as policy:
        assert policy is None
    # auto: bfloat16 only for an architecture measured faster in it, and only where the CPU has it.
    with precision_policy("auto", architecture="cnn") as policy:
        assert policy == "mixed_bfloat16" and "twice float32's speed" in devices.describe_precision(policy, "auto")
    with precision_policy("auto", architecture="mobilenetv2") as policy:
        assert policy is None and devices.describe_precision(policy, "auto") is None
    monkeypatch.setattr(devices, "cpu_has_bfloat16", lambda: False)
    with precision_policy("auto", architecture="cnn") as policy:
        assert policy is None
    with pytest.raises(ValueError, match="auto, float32, mixed"):
        with precision_policy("half"):
            pass


def test_the_cpu_flags_say_whether_it_computes_bfloat16():
    from zoidberg.training.devices import cpu_has_bfloat16, mixed_policy

    assert cpu_has_bfloat16("processor : 0\nflags : fpu sse avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_bfloat16("flags : fpu amx_bf16 amx_tile\n")
    assert not cpu_has_bfloat16("flags : fpu sse avx2 avx512f avx512bw\n") and not cpu_has_bfloat16("")
    assert mixed_policy(True, True) == "mixed_float16" and mixed_policy(False, True) == "mixed_bfloat16"
    assert mixed_policy(False, False) is None


def test_a_bfloat16_model_trains_on_this_cpu_with_a_float32_output():
    import keras
    import numpy as np

    from zoidberg.config import ModelConfig, TrainConfig
    from zoidberg.models.layers import OUTPUT_NAME
    from zoidberg.training.pipeline import train_model

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 2, 24)
    with precision_policy("mixed", force="mixed_bfloat16"):
        model, history = train_model(
            ModelConfig(architecture="cnn", conv_blocks=1, base_filters=4, dense_units=8),
            TrainConfig(epochs=1, batch_size=8, augmentation=False, early_stopping_patience=0),
            images, labels, np.arange(16), np.arange(16, 24), num_classes=2, image_size=32,
        )
    convolution = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert convolution.compute_dtype == "bfloat16" and model.get_layer(OUTPUT_NAME).compute_dtype == "float32"
    assert np.isfinite(history["loss"][0]) and model.output.dtype == "float32"


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


def test_a_run_trained_in_bfloat16_predicts_and_exports_in_float32(demo_dir, runs_dir, monkeypatch):
    pytest.importorskip("onnxruntime")
    import keras

    from zoidberg.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from zoidberg.inference.export import export_run
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.runs.store import RunStore
    from zoidberg.training import devices
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import config_payload

    monkeypatch.setattr(devices, "cpu_has_bfloat16", lambda: True)
    config = RunConfig(
        data=DataConfig(str(demo_dir), "binary", 32),
        model=ModelConfig(architecture="cnn", conv_blocks=1, base_filters=4, dense_units=8),
        train=TrainConfig(epochs=1, batch_size=16, early_stopping_patience=0),
        n_splits=2, engine="inprocess", precision="mixed",
    )
    run = RunStore(runs_dir).create_run("cv", config_payload(config))
    lines = []
    run_cross_validation(run, report=lines.append)
    assert run.state == "completed" and any("bfloat16 on this CPU" in line for line in lines)
    saved = keras.models.load_model(run.model_path(1), safe_mode=True, compile=False)
    assert any(layer.dtype_policy.name == "mixed_bfloat16" for layer in saved.layers), "trained in bfloat16"
    ensemble = load_ensemble(run.id, runs_dir=runs_dir)
    assert all(layer.dtype_policy.name == "float32" for model in ensemble.models for layer in model.layers)
    # ONNX Runtime has no bfloat16 convolution: the export is float32, and matches the run.
    import json

    path = export_run(run, ensemble, "onnx", runs_dir / "onnx", check=True)
    card = json.loads((path.parent / "model_card.json").read_text()) if path.is_file() else json.loads((path / "model_card.json").read_text())
    assert card["parity_max_difference"] < 1e-4
