"""Prediction section: latency of one model and of the fold ensemble, from arrays and from JPEG bytes, and Grad-CAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from harness import CNN_CONFIG, MOBILENET_CONFIG, Context, Row, interleaved, median, say, timed


def largest_jpeg(root: Path) -> Path:
    """The JPEG with the most pixels under root."""
    from PIL import Image

    def pixels(path):
        with Image.open(path) as image:
            return image.size[0] * image.size[1]

    return max(sorted(root.rglob("*.jpeg")), key=pixels)


def save_fold_models(store, models_per_run: dict[str, list], image_size: int) -> dict[str, str]:
    """Writes untrained fold models into the run store as a finished CV would; returns run ids."""
    run_ids = {}
    for name, models in models_per_run.items():
        run = store.create_run("cv", {"data": {"image_size": image_size, "label_mode": "binary"}}, name)
        for fold, model in enumerate(models, start=1):
            run.fold_dir(fold)
            model.save(run.model_path(fold))
        run_ids[name] = run.id
    return run_ids


def section_predict(ctx: Context) -> list[Row]:
    """Latency from an upload to a probability, and Grad-CAM, warm, median of many calls."""
    import keras
    import reference
    import tensorflow as tf
    from PIL import Image

    from zoidberg.config import ModelConfig
    from zoidberg.data.imaging import decode_grayscale, load_image, resize_square
    from zoidberg.inference.batch import score_decoded
    from zoidberg.inference.scoring import FilmSource, predict_sources, record_of, score_films
    from zoidberg.models.build import build_model
    from zoidberg.models.layers import last_conv_layer_name
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.runs.store import RunStore

    size = ctx.image_size
    keras.utils.set_random_seed(7)
    upload_path = largest_jpeg(ctx.fullres)
    upload = upload_path.read_bytes()
    with Image.open(upload_path) as image:
        upload_pixels = image.size
    gray = load_image(next(iter(sorted(ctx.data224.rglob("*.jpeg")))), size)  # A decoded upload at model size.
    x = gray.astype(np.float32)[..., None]  # The reference's input: 0..255, as its training data.

    store = RunStore(ctx.scratch / "predict-runs")
    zoidberg_models = {
        "cnn-1": [build_model(ModelConfig(**CNN_CONFIG), size, 2)],
        "cnn-5": [build_model(ModelConfig(**CNN_CONFIG), size, 2) for _ in range(5)],
    }
    reference_models = {
        "cnn-1": [reference.create_cnn(size)],
        "cnn-5": [reference.create_cnn(size) for _ in range(5)],
    }
    if "mobilenetv2" in ctx.architectures:
        zoidberg_models["mobilenetv2-1"] = [build_model(ModelConfig(**MOBILENET_CONFIG), size, 2)]
        reference_models["mobilenetv2-1"] = [reference.create_mobilenetv2(size)]
    run_ids = save_fold_models(store, zoidberg_models, size)
    ensembles = {name: load_ensemble(run_id, runs_dir=store.root) for name, run_id in run_ids.items()}
    labels = {"cnn-1": "1 CNN", "cnn-5": "5-fold CNN ensemble", "mobilenetv2-1": "1 MobileNetV2"}
    array_targets = {"cnn-1": 10.0, "cnn-5": 40.0, "mobilenetv2-1": None}
    bytes_targets = {"cnn-1": None, "cnn-5": 40.0, "mobilenetv2-1": None}
    rows = []
    for name, ensemble in ensembles.items():
        models = reference_models[name]
        repeats = ctx.latency_repeats if name != "mobilenetv2-1" else max(5, ctx.latency_repeats // 2)
        say(f"predict: {labels[name]}, {repeats} calls per variant")
        # The bound: the models' forward pass alone, traced, on a ready tensor.
        forward = tf.function(
            lambda batch, models=ensemble.models: [model(batch, training=False) for model in models],
            input_signature=[tf.TensorSpec((None, size, size, 1), tf.float32)],
        )
        ready = tf.constant(gray.astype(np.float32)[None, :, :, None] / 255.0)
        times = interleaved(
            {
                "reference": lambda: float(np.mean([reference.predict_array(model, x) for model in models])),
                "zoidberg": lambda: ensemble.decide(score_decoded(ensemble, [gray])[0].prediction),
                "forward_only": lambda: [output.numpy() for output in forward(ready)],
            },
            repeats,
        )
        forward_ms = median(times["forward_only"]) * 1000
        rows.append(
            Row(
                "predict", f"Predict, {labels[name]}: decoded {size}-px image → probability", "ms",
                median(times["reference"]) * 1000, median(times["zoidberg"]) * 1000, max_zoidberg=array_targets[name],
                note=f"Warm models; median of {repeats} alternating calls. Reference: model.predict per model; "
                "Zoidberg: score_decoded, the batch step under the one prediction function (one traced tf.function for all folds, and the gate), then the decision. Bound: the traced forward "
                f"pass alone takes {forward_ms:.1f} ms, so Zoidberg's own overhead is "
                f"{median(times['zoidberg']) * 1000 - forward_ms:.1f} ms.",
                samples={key: [value * 1000 for value in values] for key, values in times.items()},
            )
        )

        def dashboard_path():
            # What the Predict page does: the one function keeping the decoded film, a display-size decode, the record.
            (film,) = score_films(ensemble, [FilmSource("upload.jpeg", upload)], keep_images=True)
            decode_grayscale(upload, name="upload.jpeg", draft_size=1024)
            return record_of(ensemble, film, door="page")

        times = interleaved(
            {
                "reference": lambda: reference.predict_bytes(models, upload, size),
                "zoidberg": lambda: predict_sources(ensemble, [FilmSource("upload.jpeg", upload)], door="cli"),
                "dashboard": dashboard_path,
                "decode_only": lambda: resize_square(decode_grayscale(upload, name="upload.jpeg", draft_size=size), size),
            },
            repeats,
        )
        rows.append(
            Row(
                "predict", f"Predict, {labels[name]}: full-res JPEG bytes → probability", "ms",
                median(times["reference"]) * 1000, median(times["zoidberg"]) * 1000, max_zoidberg=bytes_targets[name],
                note=(
                    f"{upload_pixels[0]}x{upload_pixels[1]} px, {len(upload) / 1024:,.0f} KB JPEG. Reference: tf.image.decode_image + "
                    "resize (as its loader) + model.predict; Zoidberg: predict_sources, the one prediction function every door calls (draft decode, score, gate, record). "
                    f"Zoidberg's draft decode + resize alone: {median(times['decode_only']) * 1000:.1f} ms. "
                    f"The Predict page's path (full decode kept for display): {median(times['dashboard']) * 1000:.1f} ms."
                ),
                samples={key: [value * 1000 for value in values] for key, values in times.items()},
            )
        )

    say("predict: Grad-CAM")
    gradcam_repeats = max(5, ctx.latency_repeats // 2)
    for name in ensembles:
        ensemble = ensembles[name]
        models = reference_models[name]
        functions = {"zoidberg": lambda: ensemble.gradcam(gray)}
        if name != "mobilenetv2-1":
            targets = [(model, last_conv_layer_name(model)) for model in models]
            functions["reference"] = lambda: [reference.gradcam_heatmap(x, model, layer) for model, layer in targets]
        first_call, _ = timed(ensemble.gradcam, gray)
        times = interleaved(functions, gradcam_repeats)
        rows.append(
            Row(
                "predict", f"Grad-CAM, {labels[name]}, one image", "ms",
                median(times["reference"]) * 1000 if "reference" in times else None, median(times["zoidberg"]) * 1000,
                max_zoidberg=150.0,
                note=(
                    f"Median of {gradcam_repeats} warm calls; first call (tracing) {first_call * 1000:,.0f} ms. "
                    + (
                        "Reference: the Keras example's make_gradcam_heatmap (eager GradientTape, sub-model per call)."
                        if "reference" in times
                        else "No reference: the notes' nested Sequential MobileNetV2 hides its last convolution from the Keras example."
                    )
                ),
                samples={key: [value * 1000 for value in values] for key, values in times.items()} | {"first_call_ms": first_call * 1000},
            )
        )
    return rows
