"""The design notes' pipeline, reproduced faithfully: the "reference" of the benchmarks.

What the notes do (../shared/design-notes.md):

1. `keras.utils.image_dataset_from_directory(all_data, labels="inferred", label_mode="binary",
   color_mode="grayscale", batch_size=32, image_size=(128, 128), shuffle=True)`;
2. iterate it and `np.concatenate` the batches into float32 images (0..255) and labels;
3. `KFold(n_splits=5, shuffle=True, random_state=1)` on those arrays;
4. per fold a fresh `Sequential` CNN (Conv2D 32/64/128 3x3 ReLU + MaxPooling2D 2x2 each,
   Flatten, Dense 128 ReLU, Dense 1 sigmoid), Adam 1e-3, binary cross-entropy, accuracy;
5. `model.fit(train_images, train_labels, epochs=N, validation_data=(val_images, val_labels))`;
6. single images predicted with `model.predict`.

The notes move train/ and val/ into one `all_data/` folder; `pooled_directory` builds the
same folder out of symlinks in a scratch directory (the images are never copied).

Run as a script it is the reference cross-validation that the memory, start-up and
end-to-end benchmarks launch in a subprocess:

    python benchmarks/reference.py cv --data ../shared/data/chest_xray_224 --folds 5 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from sklearn.model_selection import KFold

CLASS_FOLDERS = ("NORMAL", "PNEUMONIA")
POOLED_SPLITS = ("train", "val")


def pooled_directory(root: str | os.PathLike, scratch: str | os.PathLike) -> Path:
    """Returns the notes' `all_data/{NORMAL,PNEUMONIA}` folder for a Kaggle-layout root.

    A root with only one of train/ and val/ is used as that split's folder directly; with
    both, `scratch/all_data` is filled with one symlink per image (the test split, if any,
    is left out, as the notes do). A flat root is returned as it is.
    """
    root = Path(root).resolve()
    splits = [root / split for split in POOLED_SPLITS if (root / split).is_dir()]
    if not splits:
        return root
    if len(splits) == 1:
        return splits[0]
    pooled = Path(scratch) / "all_data"
    for class_folder in CLASS_FOLDERS:
        target = pooled / class_folder
        target.mkdir(parents=True, exist_ok=True)
        for split in splits:
            source = split / class_folder
            if not source.is_dir():
                continue
            for entry in sorted(os.scandir(source), key=lambda item: item.name):
                link = target / f"{split.name}-{entry.name}"
                if not link.exists():
                    link.symlink_to(entry.path)
    return pooled


def load_arrays(directory: str | os.PathLike, image_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1 and 2: the Keras directory loader, then all batches concatenated.

    Returns:
        float32 images (N, S, S, 1) in 0..255 and float32 labels (N, 1).
    """
    all_dataset = keras.utils.image_dataset_from_directory(
        directory,
        labels="inferred",
        label_mode="binary",
        color_mode="grayscale",
        batch_size=32,
        image_size=(image_size, image_size),
        shuffle=True,
        verbose=False,  # Only silences the "Found N files" line.
    )
    all_images, all_labels = [], []
    for images, labels in all_dataset:
        all_images.append(images.numpy())
        all_labels.append(labels.numpy())
    return np.concatenate(all_images), np.concatenate(all_labels)


def create_cnn(image_size: int = 128) -> keras.Model:
    """Step 4: the notes' Sequential CNN, compiled as they compile it."""
    model = keras.Sequential(
        [
            keras.Input(shape=(image_size, image_size, 1)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(128, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    return _compile(model)


def create_mobilenetv2(image_size: int = 128) -> keras.Model:
    """The notes' MobileNetV2 (alpha 1.0, weights=None, one gray channel), compiled alike."""
    base_model = keras.applications.MobileNetV2(input_shape=(image_size, image_size, 1), include_top=False, weights=None)
    model = keras.Sequential(
        [
            keras.Input(shape=(image_size, image_size, 1)),
            base_model,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    return _compile(model)


def _compile(model: keras.Model) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.001),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=["accuracy"],
    )
    return model


CREATORS = {"cnn": create_cnn, "mobilenetv2": create_mobilenetv2}


def cross_validate(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    architecture: str = "cnn",
    n_splits: int = 5,
    epochs: int = 10,
    callbacks: list | None = None,
    verbose="auto",
) -> list[dict]:
    """Steps 3 to 5: KFold(shuffle, random_state=1) and a fresh model fitted per fold.

    Returns:
        The Keras history of every fold.
    """
    image_size = int(images.shape[1])
    kfold = KFold(n_splits=n_splits, shuffle=True, random_state=1)
    histories = []
    for fold, (train_index, val_index) in enumerate(kfold.split(images, labels), start=1):
        print(f"Processing fold {fold}", flush=True)
        train_images, val_images = images[train_index], images[val_index]
        train_labels, val_labels = labels[train_index], labels[val_index]
        model = CREATORS[architecture](image_size)
        history = model.fit(
            train_images,
            train_labels,
            epochs=epochs,
            validation_data=(val_images, val_labels),
            callbacks=callbacks,
            verbose=verbose,
        )
        histories.append(history.history)
    return histories


def predict_array(model: keras.Model, image: np.ndarray) -> float:
    """Step 6: one preprocessed image (S, S, 1) in 0..255 to a probability with model.predict."""
    return float(model.predict(image[np.newaxis], verbose=0)[0, 0])


def decode_for_model(data: bytes, image_size: int = 128) -> np.ndarray:
    """Decodes uploaded bytes exactly as the directory loader decodes training files."""
    image = tf.image.decode_image(data, channels=1, expand_animations=False)
    return tf.image.resize(image, (image_size, image_size), method="bilinear").numpy()


def predict_bytes(models: list[keras.Model], data: bytes, image_size: int = 128) -> float:
    """Uploaded bytes to the mean probability of `models`, one model.predict per model."""
    image = decode_for_model(data, image_size)
    return float(np.mean([predict_array(model, image) for model in models]))


def gradcam_heatmap(image: np.ndarray, model: keras.Model, last_conv_layer_name: str) -> np.ndarray:
    """Grad-CAM as the Keras example writes it (keras.io/examples/vision/grad_cam), eagerly.

    The notes have no Grad-CAM; this is what a notebook would paste in. Keras 3 gives a
    Sequential model no `.output`, hence `outputs[0]` (and `inputs[0]`, which keeps Keras
    from warning about the input structure on every call).
    """
    grad_model = keras.models.Model(model.inputs[0], [model.get_layer(last_conv_layer_name).output, model.outputs[0]])
    with tf.GradientTape() as tape:
        last_conv_layer_output, preds = grad_model(image[np.newaxis])
        class_channel = preds[:, 0]
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis]
    heatmap = tf.squeeze(heatmap)
    heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)
    return heatmap.numpy()


class FirstBatchMarker(keras.callbacks.Callback):
    """Prints `FIRST_BATCH <unix time>` once, after the first training batch (start-up benchmark)."""

    def __init__(self):
        super().__init__()
        self.done = False

    def on_train_batch_end(self, batch, logs=None):
        if not self.done:
            self.done = True
            print(f"FIRST_BATCH {time.time():.6f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The design notes' cross-validation (benchmark reference).")
    commands = parser.add_subparsers(dest="command", required=True)
    cv = commands.add_parser("cv", help="Steps 1 to 5 on a data folder.")
    cv.add_argument("--data", required=True, help="Kaggle-layout root (train+val are pooled) or a flat folder.")
    cv.add_argument("--scratch", default=None, help="Where to build the pooled all_data/ symlinks [default: a temp dir].")
    cv.add_argument("--arch", choices=list(CREATORS), default="cnn")
    cv.add_argument("--image-size", type=int, default=128)
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--epochs", type=int, default=10)
    cv.add_argument("--verbose", default="auto", help="Keras fit verbosity (the notes use the default).")
    cv.add_argument("--first-batch-marker", action="store_true", help="Print FIRST_BATCH <time> after the first batch.")
    args = parser.parse_args(argv)

    import tempfile

    with tempfile.TemporaryDirectory(prefix="reference-", dir=args.scratch) as scratch:
        directory = pooled_directory(args.data, scratch)
        images, labels = load_arrays(directory, args.image_size)
        print(f"Loaded {len(images)} images {images.shape[1:]} from {directory}", flush=True)
        verbose = int(args.verbose) if args.verbose.isdigit() else args.verbose
        callbacks = [FirstBatchMarker()] if args.first_batch_marker else None
        histories = cross_validate(
            images, labels, architecture=args.arch, n_splits=args.folds, epochs=args.epochs, callbacks=callbacks, verbose=verbose
        )
    for fold, history in enumerate(histories, start=1):
        print(f"fold {fold}: val_accuracy {history['val_accuracy'][-1]:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
