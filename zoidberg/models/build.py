"""Flat Functional Keras models of every registry architecture, and compiling them for training."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

from zoidberg.models.layers import (
    FEATURES_NAME,
    HEAD_PREFIX,
    INPUT_NAME,
    OUTPUT_NAME,
    PREPROCESS_PREFIX,
    freeze_backbone,
)
from zoidberg.options.registry import ARCHITECTURES, BACKBONES, cnn_min_image_size
from zoidberg.models.weights import mobilenet_alpha, normalize_weights, resolve_imagenet_weights

if TYPE_CHECKING:
    import keras

    from zoidberg.config import ModelConfig, TrainConfig

# Keras is imported inside the functions that build models, never at module level, so that
# importing this module (the configuration checks below serve the CLI and the forms) stays cheap.

# Input convention shared by every architecture: the model input is named "image" and takes
# float32 grayscale batches of shape (N, S, S, 1) with values in [0, 1] (the training
# pipeline divides uint8 pixels by 255). Each backbone converts this range to what its
# ImageNet weights expect with built-in layers inside the graph, so callers never
# preprocess per architecture. The layer names are those of zoidberg.models.layers.

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------
# Feature builders: one per registry architecture, mapping the "image" tensor to "features".
# ---------------------------------------------------------------------------------------


def _build_cnn_features(model_config: ModelConfig, image):
    """Stacks the design notes' Conv2D/MaxPooling2D blocks and flattens them."""
    from keras import layers

    x = image
    for block in range(1, model_config.conv_blocks + 1):
        x = layers.Conv2D(
            model_config.base_filters * 2 ** (block - 1),
            model_config.kernel_size,
            activation="relu",
            padding="valid",
            name=f"block{block}_conv",
        )(x)
        if model_config.batch_norm:
            x = layers.BatchNormalization(name=f"block{block}_bn")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return layers.Flatten(name=FEATURES_NAME)(x)



def _add_preprocessing(x, preprocessing: str, pretrained: bool):
    """Maps [0, 1] gray input to the value range the backbone's weights expect.

    The same ranges are used without pretrained weights so that training from scratch
    sees zero-centred inputs too; only the channel count differs (1 instead of 3).
    """
    from keras import layers

    if pretrained:
        # ImageNet kernels expect RGB, so the gray channel is repeated with a built-in
        # layer (a Lambda would make the .keras file unloadable with safe_mode=True).
        x = layers.Concatenate(axis=-1, name=f"{PREPROCESS_PREFIX}gray_to_rgb")([x, x, x])
    if preprocessing == "tf":
        return layers.Rescaling(2.0, offset=-1.0, name=f"{PREPROCESS_PREFIX}scale")(x)
    if preprocessing == "torch":
        mean = list(IMAGENET_MEAN_RGB) if pretrained else [sum(IMAGENET_MEAN_RGB) / 3]
        std = list(IMAGENET_STD_RGB) if pretrained else [sum(IMAGENET_STD_RGB) / 3]
        return layers.Normalization(
            axis=-1, mean=mean, variance=[value**2 for value in std], name=f"{PREPROCESS_PREFIX}normalize"
        )(x)
    if preprocessing == "efficientnet":
        if not pretrained:
            # EfficientNet rescales by 1/255 internally, so it is fed 0..255.
            return layers.Rescaling(255.0, name=f"{PREPROCESS_PREFIX}scale")(x)
        # With weights="imagenet" Keras inserts an extra per-channel Rescaling of
        # 1/sqrt(std) after its Normalization layer, but not when weights is a file path,
        # which is how weights are loaded here. Because that Rescaling follows a per-channel
        # affine map, the same result is reached by applying the equivalent affine map to
        # the input: x' = 255 * (k * u + mean * (1 - k)) with k = 1/sqrt(std).
        factors = [1.0 / math.sqrt(std) for std in IMAGENET_STD_RGB]
        return layers.Rescaling(
            [255.0 * k for k in factors],
            offset=[255.0 * mean * (1.0 - k) for mean, k in zip(IMAGENET_MEAN_RGB, factors)],
            name=f"{PREPROCESS_PREFIX}scale",
        )(x)
    raise ValueError(f"Unknown preprocessing {preprocessing!r}.")


def _build_backbone_features(architecture: str, model_config: ModelConfig, image):
    """Inlines a keras.applications backbone after `image` and pools its last feature map."""
    import keras
    from keras import layers

    backbone = BACKBONES[architecture]
    image_size = int(image.shape[1])
    weights_path = resolve_imagenet_weights(
        architecture, model_config.alpha, model_config.weights, image_size=image_size
    )
    x = _add_preprocessing(image, backbone.preprocessing, pretrained=weights_path is not None)
    kwargs = {"alpha": float(model_config.alpha)} if architecture == "mobilenetv2" else {}
    # Passing input_tensor builds the backbone's layers on our tensor, so its layers join
    # our single Functional graph instead of being nested as one Model layer; Grad-CAM
    # then reaches the last convolution by name.
    application_model = getattr(keras.applications, backbone.application)(
        include_top=False,
        weights=weights_path,
        input_tensor=x,
        input_shape=tuple(x.shape[1:]),
        pooling=None,
        **kwargs,
    )
    return layers.GlobalAveragePooling2D(name=FEATURES_NAME)(application_model.output)


# The builder of each registry architecture, by registry key.
FEATURE_BUILDERS = {
    "cnn": _build_cnn_features,
    **{name: functools.partial(_build_backbone_features, name) for name in BACKBONES},
}


def check_model_config(model_config: ModelConfig, image_size: int, check_weights: bool = False) -> None:
    """Raises a helpful error for a configuration that cannot be built.

    Args:
        model_config: The model configuration.
        image_size: Square input side in pixels.
        check_weights: Also resolve the weights file, which raises WeightsNotFoundError
            (a FileNotFoundError, not a ValueError) when it is missing.

    Raises:
        ValueError: The image is too small for the architecture or the CNN's blocks, or
            the weights settings do not fit the architecture.
        WeightsNotFoundError: With check_weights, when the weights file is missing.
    """
    spec = ARCHITECTURES.get(model_config.architecture)
    if spec is None:
        raise ValueError(
            f"Unknown architecture {model_config.architecture!r}; choose one of {', '.join(ARCHITECTURES)}."
        )
    if image_size < spec.min_image_size:
        raise ValueError(f"{spec.label} needs images of at least {spec.min_image_size} px, not {image_size}.")
    if model_config.architecture == "cnn":
        needed = cnn_min_image_size(model_config.conv_blocks, model_config.kernel_size)
        if image_size < needed:
            raise ValueError(
                f"{model_config.conv_blocks} conv blocks with kernel {model_config.kernel_size} need at least "
                f"{needed} px, not {image_size}; use fewer blocks, a smaller kernel or larger images."
            )
        return
    weights = normalize_weights(model_config.weights)
    if model_config.transfer_mode != "end-to-end" and weights is None:
        raise ValueError(f"transfer_mode {model_config.transfer_mode!r} needs pretrained weights (imagenet or a file).")
    if weights == "imagenet" and model_config.architecture == "mobilenetv2":
        mobilenet_alpha(model_config.alpha)
    if check_weights:
        resolve_imagenet_weights(model_config.architecture, model_config.alpha, weights, image_size=image_size)


def _check_num_classes(num_classes: int) -> None:
    """Raises ValueError unless there are at least two classes."""
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be a whole number of at least 2, not {num_classes!r}.")


def _uses_hidden_dense(model_config: ModelConfig) -> bool:
    """Returns whether the architecture's head has a hidden Dense layer (the CNN's)."""
    return "dense_units" in ARCHITECTURES[model_config.architecture].hyperparameter_names


def _add_head(features, model_config: ModelConfig, num_classes: int):
    """Adds dropout, the CNN's hidden Dense layer and the output layer."""
    from keras import layers

    x = features
    if model_config.dropout_rate > 0:
        x = layers.Dropout(model_config.dropout_rate, name=f"{HEAD_PREFIX}dropout")(x)
    if _uses_hidden_dense(model_config):
        x = layers.Dense(model_config.dense_units, activation="relu", name=f"{HEAD_PREFIX}dense")(x)
    # The output stays float32 under mixed precision, so probabilities and the loss keep their range.
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", dtype="float32", name=OUTPUT_NAME)(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=OUTPUT_NAME)(x)


def _build_features(model_config: ModelConfig, image_size: int):
    """Returns the "image" input tensor and the features tensor for a configuration."""
    import keras

    check_model_config(model_config, image_size)
    image = keras.Input(shape=(image_size, image_size, 1), dtype="float32", name=INPUT_NAME)
    features = FEATURE_BUILDERS[model_config.architecture](model_config, image)
    return image, features


def build_model(model_config: ModelConfig, image_size: int, num_classes: int) -> keras.Model:
    """Builds an uncompiled flat Functional model.

    Input "image": float32 (N, S, S, 1) in [0, 1]. Output "predictions": 1 sigmoid unit
    (probability of the positive class) when num_classes == 2, else num_classes softmax
    units. With transfer_mode "frozen" or "fine-tune" the backbone layers are returned
    non-trainable; for "fine-tune", train the head first, then call
    `unfreeze_top_layers(model, model_config.fine_tune_layers)` and compile again with a
    lower learning rate.

    Args:
        model_config: Architecture and hyperparameters.
        image_size: Square input side in pixels.
        num_classes: Number of classes (2 for normal vs pneumonia).

    Returns:
        The model.

    Raises:
        ValueError: For a configuration check_model_config rejects.
        WeightsNotFoundError: When ImageNet weights are requested but missing locally.
    """
    import keras

    _check_num_classes(num_classes)
    image, features = _build_features(model_config, image_size)
    outputs = _add_head(features, model_config, num_classes)
    model = keras.Model(image, outputs, name=f"zoidberg_{model_config.architecture}")
    if normalize_weights(model_config.weights) is None:
        _speed_up_batch_norm_statistics(model)
    if model_config.transfer_mode in ("frozen", "fine-tune"):
        freeze_backbone(model)
    return model


# Momentum of BatchNormalization's moving statistics for backbones trained from scratch.
SCRATCH_BATCH_NORM_MOMENTUM = 0.9


def _speed_up_batch_norm_statistics(model: keras.Model) -> None:
    """Lets BatchNormalization moving statistics follow the data when training from scratch.

    keras.applications backbones use momentum 0.99-0.999, tuned for ImageNet-length
    training. On a few hundred steps the moving mean and variance then stay near their
    initial 0 and 1, so inference-mode outputs are constant (validation AUC 0.5 while
    training AUC climbs). A momentum of 0.9 reaches the data's statistics in tens of steps.
    """
    from keras import layers

    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = SCRATCH_BATCH_NORM_MOMENTUM


def build_backbone_feature_extractor(model_config: ModelConfig, image_size: int) -> keras.Model:
    """Builds the frozen part of a model: "image" input to the pooled "features" vector.

    Every layer is non-trainable so that features can be computed once and cached; call it
    with training=False. Its weights match build_model's backbone for the same config when
    the weights come from a file.

    Args:
        model_config: Architecture and hyperparameters.
        image_size: Square input side in pixels.

    Returns:
        A model mapping (N, S, S, 1) in [0, 1] to (N, feature_dim).
    """
    import keras

    image, features = _build_features(model_config, image_size)
    extractor = keras.Model(image, features, name=f"features_{model_config.architecture}")
    extractor.trainable = False
    return extractor


def build_head(model_config: ModelConfig, feature_dim: int, num_classes: int) -> keras.Model:
    """Builds the trainable classifier head for cached features.

    Its layer names equal those of build_model's head, so assemble_frozen_model can copy
    its weights into a full model.

    Args:
        model_config: Architecture and hyperparameters.
        feature_dim: Length of the feature vector from the extractor.
        num_classes: Number of classes.

    Returns:
        An uncompiled model mapping (N, feature_dim) to the "predictions" output.
    """
    import keras

    _check_num_classes(num_classes)
    features = keras.Input(shape=(feature_dim,), dtype="float32", name=FEATURES_NAME)
    return keras.Model(features, _add_head(features, model_config, num_classes), name="head")


def assemble_frozen_model(
    model_config: ModelConfig,
    image_size: int,
    num_classes: int,
    head: keras.Model,
    feature_extractor: keras.Model | None = None,
) -> keras.Model:
    """Builds the full flat model and copies a trained head's weights into it.

    Args:
        model_config: The configuration the extractor and head were built with.
        image_size: Square input side in pixels.
        num_classes: Number of classes.
        head: A trained model from build_head.
        feature_extractor: The extractor the features came from; when given, its backbone
            weights are copied too (needed when the backbone has no weights file).

    Returns:
        One model, saveable as a single .keras file, equal to head(extractor(x)).
    """
    model = build_model(model_config, image_size, num_classes)
    for layer in head.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
    if feature_extractor is not None:
        for layer in feature_extractor.layers:
            if layer.weights:
                model.get_layer(layer.name).set_weights(layer.get_weights())
    return model



def build_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """Builds an optimizer by name.

    Args:
        name: "adam", "adamw", "sgd" (momentum 0.9) or "rmsprop".
        learning_rate: Initial learning rate.

    Returns:
        A fresh optimizer.
    """
    import keras

    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    raise ValueError(f"Unknown optimizer {name!r}; choose adam, adamw, sgd or rmsprop.")


def compile_model(model: keras.Model, train_config: TrainConfig, num_classes: int) -> keras.Model:
    """Compiles a model for integer labels (no jit_compile: XLA is slower on this CPU).

    Binary models use binary_crossentropy with BinaryAccuracy and ROC AUC; multiclass
    models use sparse_categorical_crossentropy with SparseCategoricalAccuracy and a
    macro one-vs-rest ROC AUC. Both name their metrics the same, so per-epoch logs
    always have "loss", "accuracy", "auc" and, with validation data, "val_loss",
    "val_accuracy", "val_auc". With train_config.label_smoothing above 0 the targets
    are smoothed (the metrics still see the true labels).

    Args:
        model: A model from build_model.
        train_config: Optimizer name and learning rate.
        num_classes: Number of classes.

    Returns:
        The same model, compiled.
    """
    import keras

    from zoidberg.models.keras_metrics import SmoothedSparseCategoricalCrossentropy, SparseMacroAUC

    _check_num_classes(num_classes)
    optimizer = build_optimizer(train_config.optimizer, train_config.learning_rate)
    smoothing = float(train_config.label_smoothing)
    if num_classes == 2:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=smoothing) if smoothing else "binary_crossentropy"
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    else:
        # Keras's sparse cross-entropy has no label smoothing, hence the engine's own loss.
        loss = SmoothedSparseCategoricalCrossentropy(num_classes, smoothing) if smoothing else "sparse_categorical_crossentropy"
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy"), SparseMacroAUC(num_classes, name="auc")]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=False)
    return model


METRIC_NAMES = ("loss", "accuracy", "auc")
