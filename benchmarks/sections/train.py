"""Training section: images per second of the CNN and MobileNetV2 against the reference's model.fit."""

from __future__ import annotations

import time

import numpy as np
from harness import CNN_CONFIG, MOBILENET_CONFIG, Context, Row, load_average, median, say


class EpochTimer:
    """Keras callback factory: training-phase wall and CPU seconds of every epoch (validation excluded).

    CPU seconds (all threads of this process) barely move with other users' load, unlike
    wall time; they back up the wall-time throughput on this shared machine.
    """

    @staticmethod
    def create():
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds: list[float] = []
                self.cpu_seconds: list[float] = []
                self._start = self._last = self._cpu_start = self._cpu_last = 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self._start = self._last = time.perf_counter()
                self._cpu_start = self._cpu_last = time.process_time()

            def on_train_batch_end(self, batch, logs=None):
                self._last = time.perf_counter()
                self._cpu_last = time.process_time()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(self._last - self._start)
                self.cpu_seconds.append(self._cpu_last - self._cpu_start)

        return _Timer()


def layer_stack(model) -> list[tuple]:
    """Describes a model's compute layers (type and shape-deciding settings) in order."""
    import keras

    stack = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        config = layer.get_config()
        keys = ("filters", "kernel_size", "strides", "padding", "pool_size", "units", "activation", "use_bias")
        stack.append((type(layer).__name__, *(str(config.get(key)) for key in keys if key in config)))
    return stack


def section_train(ctx: Context) -> list[Row]:
    """Steady-state training throughput: the reference's fit on NumPy vs Zoidberg's loop.

    Each side gets one model, trained one epoch per fit() call, and the sides take turns
    epoch by epoch (order reversed every round), so a burst of load on this shared machine
    hits both. The first epoch traces the step function and is reported apart. The Zoidberg
    side is its training loop's parts as train_model puts them together: build_model from
    the registry, compile_model (as shipped, with its AUC metric), make_batches over the
    full uint8 tensor, fit(shuffle=False); a third contestant compiles like the notes (no
    AUC) to price the metric.
    """
    import keras
    import reference
    import tensorflow as tf

    from zoidberg.config import ModelConfig, TrainConfig
    from zoidberg.data.dataset import load_dataset
    from zoidberg.models.build import build_model, compile_model
    from zoidberg.models.layers import count_parameters, estimate_flops
    from zoidberg.training.devices import precision_policy
    from zoidberg.training.pipeline import make_batches

    size = ctx.image_size
    dataset = load_dataset(ctx.data224, image_size=size, cache_dir=ctx.cache_dir)
    order = np.random.default_rng(0).permutation(len(dataset))
    labels = dataset.labels
    image_tensor = tf.constant(dataset.images)  # As train_model and the CV hold it: all images, uint8.
    train_config = TrainConfig(
        epochs=ctx.train_epochs, batch_size=32, learning_rate=1e-3, optimizer="adam",
        early_stopping_patience=0, class_weighting="none", augmentation=False,
    )
    rows = []
    for architecture, config_fields, creator in (
        ("cnn", CNN_CONFIG, reference.create_cnn),
        ("mobilenetv2", MOBILENET_CONFIG, reference.create_mobilenetv2),
    ):
        if architecture not in ctx.architectures:
            continue
        n_train = min(ctx.train_images[architecture], len(dataset) - 16)
        n_validation = min(32, len(dataset) - n_train)
        train_indices = np.sort(order[:n_train])
        validation_indices = np.sort(order[n_train:n_train + n_validation])
        # What the reference's step 2 hands to fit: float32 0..255 with a channel axis.
        x_train = dataset.images[train_indices].astype(np.float32)[..., None]
        y_train = labels[train_indices].astype(np.float32)[:, None]
        x_validation = dataset.images[validation_indices].astype(np.float32)[..., None]
        y_validation = labels[validation_indices].astype(np.float32)[:, None]
        model_config = ModelConfig(**config_fields)
        keras.utils.set_random_seed(1)
        reference_model = creator(size)
        # As a cross-validation builds it by default (--precision auto): bfloat16 for the CNN on a CPU that has it.
        with precision_policy("auto", architecture=architecture) as policy:
            zoidberg_model = compile_model(build_model(model_config, size, 2), train_config, 2)
        contestants = {
            "reference": (
                reference_model,
                dict(x=x_train, y=y_train, validation_data=(x_validation, y_validation)),
            ),
            "zoidberg": (
                zoidberg_model,
                dict(
                    x=make_batches(image_tensor, labels, train_indices, 32, shuffle=True, random_state=1),
                    validation_data=make_batches(image_tensor, labels, validation_indices, 32),
                    shuffle=False,
                ),
            ),
        }
        if architecture == "cnn":
            with precision_policy("auto", architecture=architecture):
                no_auc = build_model(model_config, size, 2)
            no_auc.compile(
                optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="binary_crossentropy",
                metrics=[keras.metrics.BinaryAccuracy(name="accuracy")], jit_compile=False,
            )
            contestants["zoidberg_no_auc"] = (no_auc, contestants["zoidberg"][1])
        flops = estimate_flops(zoidberg_model)
        parameters = {"reference": reference_model.count_params(), "zoidberg": count_parameters(zoidberg_model)["total"]}
        same_stack = architecture != "cnn" or layer_stack(reference_model) == layer_stack(zoidberg_model)
        rounds = ctx.train_epochs - 1
        say(f"train: {architecture}, {n_train} images, 1 tracing epoch + {rounds} rounds of one epoch per side")

        cpu_seconds: dict[str, list[float]] = {name: [] for name in contestants}

        def one_epoch(name: str) -> float:
            model, fit_arguments = contestants[name]
            timer = EpochTimer.create()
            model.fit(epochs=1, callbacks=[timer], verbose=0, **fit_arguments)
            cpu_seconds[name].append(timer.cpu_seconds[0])
            return timer.seconds[0]

        first_epoch = {name: one_epoch(name) for name in contestants}
        for values in cpu_seconds.values():
            values.clear()
        epoch_seconds: dict[str, list[float]] = {name: [] for name in contestants}
        names = list(contestants)
        for index in range(rounds):
            for name in names if index % 2 == 0 else reversed(names):
                epoch_seconds[name].append(one_epoch(name))
            say(f"train: {architecture} round {index + 1}/{rounds}: " + ", ".join(f"{name} {values[-1]:.1f} s" for name, values in epoch_seconds.items()))
        throughput = {name: [n_train / seconds for seconds in values] for name, values in epoch_seconds.items()}
        medians = {name: median(values) for name, values in throughput.items()}
        paired = [z / r for z, r in zip(throughput["zoidberg"], throughput["reference"])]
        gflops = {name: flops * 3 * value / 1e9 for name, value in medians.items()}
        cpu_ms_per_image = {name: median(values) / n_train * 1000 for name, values in cpu_seconds.items()}
        samples = {
            "epoch_seconds": epoch_seconds, "images_per_s": throughput, "first_epoch_s": first_epoch,
            "epoch_cpu_seconds": cpu_seconds, "cpu_ms_per_image": cpu_ms_per_image,
            "paired_ratios": paired, "forward_flops_per_image": flops, "parameters": parameters,
            "same_layer_stack": same_stack, "n_train": n_train, "load": load_average(),
        }
        label = "CNN" if architecture == "cnn" else "MobileNetV2 (alpha 1.0, no weights)"
        note = (
            f"{n_train} images at {size} px, batch 32; median of {rounds} epochs per side, sides alternating epoch by epoch "
            f"(per-round ratios {min(paired):.2f}–{max(paired):.2f}); first epoch with tracing excluded (reference "
            f"{first_epoch['reference']:.1f} s, Zoidberg {first_epoch['zoidberg']:.1f} s). "
            f"CPU time per image (all threads, robust to load): reference {cpu_ms_per_image['reference']:.1f} ms, "
            f"Zoidberg {cpu_ms_per_image['zoidberg']:.1f} ms. "
            f"Forward {flops / 1e9:.3f} GFLOP/image (models.estimate_flops), x3 for forward+backward. "
            f"Parameters: reference {parameters['reference']:,}, Zoidberg {parameters['zoidberg']:,}. "
            f"Zoidberg's precision: {policy or 'float32'} (--precision auto, the default)."
        )
        if architecture == "cnn":
            auc_cost = 1 - medians["zoidberg"] / medians["zoidberg_no_auc"]
            note += (
                f" build_model gives {'the same' if same_stack else 'a DIFFERENT'} layer stack as the notes' Sequential."
                f" compile_model's AUC metric: {medians['zoidberg_no_auc']:.1f} img/s without it, i.e. it costs "
                f"{auc_cost * 100:.1f}% (within noise when small)."
            )
            samples["auc_cost_fraction"] = auc_cost
        else:
            note += " Zoidberg adds a Rescaling layer (input to [-1, 1]); the notes feed 0..255."
        rows.append(
            Row(
                "train", f"Training throughput, {label}", "img/s", medians["reference"], medians["zoidberg"],
                # Issue 20: bfloat16 where the CPU has it must buy the CNN 1.7x; elsewhere, not to lose.
                better="higher", min_ratio=1.7 if architecture == "cnn" and policy else 1.0,
                reference_detail=f"{gflops['reference']:.1f} GFLOP/s", zoidberg_detail=f"{gflops['zoidberg']:.1f} GFLOP/s",
                note=note, samples=samples,
            )
        )
        if architecture == "cnn":
            rows.append(
                Row(
                    "train", "Training throughput, CNN, Zoidberg loop compiled without AUC", "img/s",
                    medians["reference"], medians["zoidberg_no_auc"], better="higher",
                    reference_detail=f"{gflops['reference']:.1f} GFLOP/s", zoidberg_detail=f"{gflops['zoidberg_no_auc']:.1f} GFLOP/s",
                    note="make_batches + build_model compiled with Adam 1e-3, binary cross-entropy and accuracy only "
                    "(the notes' compile); same alternation as the row above.",
                    samples={"images_per_s": throughput["zoidberg_no_auc"]},
                )
            )
    return rows
