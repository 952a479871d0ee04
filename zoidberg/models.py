"""Architecture registry, flat Functional Keras models and offline ImageNet weights resolution."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from zoidberg.config import TRANSFER_MODES, ModelConfig, TrainConfig

if TYPE_CHECKING:
    import keras

# Keras is imported inside the functions that build or inspect models, never at module
# level: the registry, the weights lookup and the checks below serve the CLI's parser and
# the dashboard's forms, which should not wait seconds for TensorFlow to load.

# Input convention shared by every architecture: the model input is named "image" and takes
# float32 grayscale batches of shape (N, S, S, 1) with values in [0, 1] (the training
# pipeline divides uint8 pixels by 255). Each backbone converts this range to what its
# ImageNet weights expect with built-in layers inside the graph, so callers never
# preprocess per architecture.
INPUT_NAME = "image"
OUTPUT_NAME = "predictions"
# The layer that turns the last feature map into a vector (GlobalAveragePooling2D for
# backbones, Flatten for the custom CNN); the frozen-feature fast path splits here.
FEATURES_NAME = "features"
PREPROCESS_PREFIX = "preprocess_"
HEAD_PREFIX = "head_"

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
MOBILENET_V2_ROWS = (96, 128, 160, 192, 224)
WEIGHTS_DIR_ENV = "ZOIDBERG_WEIGHTS_DIR"


class WeightsNotFoundError(FileNotFoundError):
    """Raised when pretrained weights are requested but no local file holds them."""


@dataclass(frozen=True)
class HyperParameter:
    """One tunable field of ModelConfig, described for the UI and the tuner.

    Attributes:
        name: The ModelConfig field it sets.
        kind: "int", "float", "bool" or "choice".
        default: Value used when nothing else is chosen.
        min_value: Lowest value for "int" and "float".
        max_value: Highest value for "int" and "float".
        step: Widget and grid step in linear units, or None for a free float. Tuners should
            ignore it when `log` is set (keras-tuner treats an int step as a factor there).
        choices: The allowed values for "choice".
        log: Whether a search should sample this range on a log scale.
        help: One sentence for a widget tooltip.
    """

    name: str
    kind: str
    default: Any
    min_value: float | int | None = None
    max_value: float | int | None = None
    step: float | int | None = None
    choices: tuple = ()
    log: bool = False
    help: str = ""

    def __post_init__(self):
        if self.kind not in ("int", "float", "bool", "choice"):
            raise ValueError(f"HyperParameter kind must be int, float, bool or choice, not {self.kind!r}.")
        if self.kind == "choice" and self.default not in self.choices:
            raise ValueError(f"Default {self.default!r} of {self.name} is not among its choices.")


@dataclass(frozen=True)
class ArchitectureSpec:
    """One registry entry.

    Attributes:
        name: Registry key, stored as ModelConfig.architecture.
        label: Human-readable name for the UI.
        builder: `builder(model_config, image_tensor) -> features_tensor`: maps the "image"
            input tensor to the pooled or flattened feature vector named "features".
        hyperparameters: The ModelConfig fields this architecture uses.
        min_image_size: Smallest square input side in pixels.
        pretrained_capable: Whether ImageNet weights exist for it.
        description: One or two sentences for the UI.
    """

    name: str
    label: str
    builder: Callable[[ModelConfig, Any], Any]
    hyperparameters: tuple[HyperParameter, ...]
    min_image_size: int
    pretrained_capable: bool
    description: str

    @property
    def hyperparameter_names(self) -> tuple[str, ...]:
        """Returns the ModelConfig field names this architecture uses."""
        return tuple(hyperparameter.name for hyperparameter in self.hyperparameters)


# ---------------------------------------------------------------------------------------
# Custom CNN.
# ---------------------------------------------------------------------------------------


def cnn_min_image_size(conv_blocks: int, kernel_size: int) -> int:
    """Returns the smallest input side that leaves at least 1 px after every block.

    Each block is a "valid" convolution (loses kernel_size - 1 px) and a 2x2 max pool
    (halves, rounding down), so the size is inverted block by block from 1 px.

    Args:
        conv_blocks: Number of Conv2D + MaxPooling2D blocks.
        kernel_size: Side of the square convolution kernel.

    Returns:
        The minimum image size in pixels.
    """
    size = 1
    for _ in range(conv_blocks):
        size = 2 * size + kernel_size - 1
    return size


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


# ---------------------------------------------------------------------------------------
# Pretrained backbones.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Backbone:
    """How to build one keras.applications backbone and find its weights."""

    label: str
    application: str  # Class name in keras.applications.
    preprocessing: str  # "tf" ([-1, 1]), "torch" (mean/std) or "efficientnet" (0..255).
    weights_url: str
    weights_file: str = ""  # Empty for MobileNetV2, whose file name depends on alpha and rows.


_BACKBONES = {
    "mobilenetv2": _Backbone(
        label="MobileNetV2",
        application="MobileNetV2",
        preprocessing="tf",
        weights_url="https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/",
    ),
    "efficientnetb0": _Backbone(
        label="EfficientNetB0",
        application="EfficientNetB0",
        preprocessing="efficientnet",
        weights_url="https://storage.googleapis.com/keras-applications/",
        weights_file="efficientnetb0_notop.h5",
    ),
    "resnet50v2": _Backbone(
        label="ResNet50V2",
        application="ResNet50V2",
        preprocessing="tf",
        weights_url="https://storage.googleapis.com/tensorflow/keras-applications/resnet/",
        weights_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "densenet121": _Backbone(
        label="DenseNet121",
        application="DenseNet121",
        preprocessing="torch",
        weights_url="https://storage.googleapis.com/tensorflow/keras-applications/densenet/",
        weights_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
}


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

    backbone = _BACKBONES[architecture]
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


# ---------------------------------------------------------------------------------------
# Registry.
# ---------------------------------------------------------------------------------------


def _dropout_hyperparameter(default: float) -> HyperParameter:
    """Returns the dropout hyperparameter shared by every architecture."""
    return HyperParameter(
        "dropout_rate",
        "float",
        default,
        min_value=0.0,
        max_value=0.7,
        step=0.05,
        help="Fraction of features dropped before the classifier during training; fights overfitting.",
    )


_CNN_HYPERPARAMETERS = (
    HyperParameter(
        "conv_blocks", "int", 3, min_value=1, max_value=5, step=1,
        help="Number of Conv2D + MaxPooling2D blocks; each halves the feature map.",
    ),
    HyperParameter(
        "base_filters", "int", 32, min_value=8, max_value=128, step=8,
        help="Filters in the first block; every next block doubles them.",
    ),
    HyperParameter(
        "kernel_size", "choice", 3, choices=(3, 5, 7),
        help="Side of the square convolution kernels; larger kernels need larger images.",
    ),
    HyperParameter(
        "dense_units", "int", 128, min_value=16, max_value=512, step=16,
        help="Units of the hidden Dense layer before the output.",
    ),
    _dropout_hyperparameter(0.3),
    HyperParameter(
        "batch_norm", "bool", False,
        help="Add BatchNormalization after every convolution; often trains faster.",
    ),
)


def _backbone_hyperparameters(with_alpha: bool) -> tuple[HyperParameter, ...]:
    """Returns the hyperparameters shared by the pretrained backbones."""
    alpha = (
        HyperParameter(
            "alpha", "choice", 1.0, choices=MOBILENET_V2_ALPHAS,
            help="Width multiplier: fewer filters per layer below 1.0, faster but less accurate.",
        ),
    )
    return (alpha if with_alpha else ()) + (
        _dropout_hyperparameter(0.3),
        HyperParameter(
            "weights", "choice", None, choices=(None, "imagenet"),
            help="None trains from scratch on gray input; imagenet starts from local ImageNet weights.",
        ),
        HyperParameter(
            "transfer_mode", "choice", "end-to-end", choices=TRANSFER_MODES,
            help="end-to-end trains everything; frozen trains only the head; "
            "fine-tune trains the head, then the top backbone layers.",
        ),
        HyperParameter(
            "fine_tune_layers", "int", 20, min_value=0, max_value=200, step=5,
            help="In fine-tune mode, how many top backbone layers are unfrozen (BatchNorm stays frozen).",
        ),
    )


_BACKBONE_DESCRIPTIONS = {
    "mobilenetv2": "Light inverted-residual network (2.3M parameters at alpha 1.0); fast on CPU.",
    "efficientnetb0": "Compound-scaled network with squeeze-excitation (4M parameters); accurate but slower.",
    "resnet50v2": "Pre-activation residual network (23.6M parameters); strong baseline, heavy on CPU.",
    "densenet121": "Densely connected network (7M parameters) popular for chest X-rays (CheXNet).",
}

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "cnn": ArchitectureSpec(
        name="cnn",
        label="Custom CNN",
        builder=_build_cnn_features,
        hyperparameters=_CNN_HYPERPARAMETERS,
        min_image_size=16,
        pretrained_capable=False,
        description="Small Conv2D/MaxPooling2D stack from the design notes, trained from scratch.",
    ),
    **{
        name: ArchitectureSpec(
            name=name,
            label=backbone.label,
            builder=functools.partial(_build_backbone_features, name),
            hyperparameters=_backbone_hyperparameters(with_alpha=name == "mobilenetv2"),
            min_image_size=32,
            pretrained_capable=True,
            description=_BACKBONE_DESCRIPTIONS[name],
        )
        for name, backbone in _BACKBONES.items()
    },
}


# ---------------------------------------------------------------------------------------
# Weights.
# ---------------------------------------------------------------------------------------


def _normalize_weights(weights: str | None) -> str | None:
    """Maps the UI's spellings of "no weights" to None."""
    if weights is None or str(weights).strip().lower() in ("", "none"):
        return None
    return str(weights)


def _mobilenet_alpha(alpha: float) -> float:
    """Returns the ImageNet alpha equal to `alpha`, or raises ValueError."""
    for known in MOBILENET_V2_ALPHAS:
        if abs(float(alpha) - known) < 1e-6:
            return known
    raise ValueError(
        f"MobileNetV2 ImageNet weights exist only for alpha {', '.join(map(str, MOBILENET_V2_ALPHAS))}, "
        f"not {alpha}."
    )


def weights_search_dirs() -> list[Path]:
    """Returns the folders searched for ImageNet weight files, in order.

    Returns:
        Each folder of $ZOIDBERG_WEIGHTS_DIR (os.pathsep-separated), then the Keras cache
        ($KERAS_HOME or ~/.keras)/models, read at call time.
    """
    folders = [Path(part).expanduser() for part in os.environ.get(WEIGHTS_DIR_ENV, "").split(os.pathsep) if part]
    keras_home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    folders.append(Path(keras_home).expanduser() / "models")
    return folders


def imagenet_weights_file_names(architecture: str, alpha: float = 1.0, image_size: int | None = None) -> list[str]:
    """Returns the Keras no-top weight file names for an architecture, preferred first.

    For MobileNetV2, Keras names the file after alpha and the input rows it would pick: the
    image size when it is 96/128/160/192/224, else 224. The convolution weights fit any
    size, so the other rows' files are accepted as fallbacks.

    Args:
        architecture: Registry key of a pretrained-capable architecture.
        alpha: MobileNetV2 width multiplier (ignored by the others).
        image_size: Input side in pixels, or None for the 224-px file first.

    Returns:
        File names, most preferred first.
    """
    backbone = _BACKBONES.get(architecture)
    if backbone is None:
        raise ValueError(f"{architecture!r} has no pretrained weights.")
    if backbone.weights_file:
        return [backbone.weights_file]
    rows = [image_size] if image_size in MOBILENET_V2_ROWS else []
    rows += [224] + [size for size in reversed(MOBILENET_V2_ROWS) if size not in rows and size != 224]
    known_alpha = _mobilenet_alpha(alpha)
    return [f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(known_alpha)}_{size}_no_top.h5" for size in rows]


def resolve_imagenet_weights(
    architecture: str, alpha: float, weights: str | None, image_size: int | None = None
) -> str | None:
    """Finds a local weights file without ever downloading.

    Args:
        architecture: Registry key.
        alpha: MobileNetV2 width multiplier (ignored by the others).
        weights: None (or "none"/"") for no weights, "imagenet", or a path to a local
            .h5 file. The older argument order (architecture, alpha, image_size, weights)
            of docs/ARCHITECTURE.md is accepted too.
        image_size: Input side in pixels; picks MobileNetV2's preferred file.

    Returns:
        An absolute file path, or None when no weights are wanted.

    Raises:
        WeightsNotFoundError: The file is not in any searched folder, naming the file and
            the folders to put it in.
        ValueError: The architecture has no ImageNet weights or alpha has none.
    """
    if isinstance(weights, int) and not isinstance(image_size, int):
        weights, image_size = image_size, weights
    weights = _normalize_weights(weights)
    if weights is None:
        return None
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"Weights file {weights} not found; check the path.")
        return str(path.resolve())
    file_names = imagenet_weights_file_names(architecture, alpha, image_size)
    folders = weights_search_dirs()
    for file_name in file_names:
        for folder in folders:
            candidate = folder / file_name
            if candidate.is_file():
                return str(candidate.resolve())
    backbone = _BACKBONES[architecture]
    what = f"{backbone.label} (alpha {alpha})" if architecture == "mobilenetv2" else backbone.label
    # The 224-px file is the one Keras uses for most input sizes, so it is the one named.
    wanted = next((name for name in file_names if "_224_" in name), file_names[0])
    raise WeightsNotFoundError(
        f"ImageNet weights for {what} not found. Put {wanted} in {folders[-1]}/ or in ${WEIGHTS_DIR_ENV} "
        f"(searched: {', '.join(str(folder) for folder in folders)}). "
        f"On a machine with internet it is at {backbone.weights_url}{wanted}."
    )


# ---------------------------------------------------------------------------------------
# Building.
# ---------------------------------------------------------------------------------------


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
    weights = _normalize_weights(model_config.weights)
    if model_config.transfer_mode != "end-to-end" and weights is None:
        raise ValueError(f"transfer_mode {model_config.transfer_mode!r} needs pretrained weights (imagenet or a file).")
    if weights == "imagenet" and model_config.architecture == "mobilenetv2":
        _mobilenet_alpha(model_config.alpha)
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
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", name=OUTPUT_NAME)(x)
    return layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME)(x)


def _build_features(model_config: ModelConfig, image_size: int):
    """Returns the "image" input tensor and the features tensor for a configuration."""
    import keras

    check_model_config(model_config, image_size)
    image = keras.Input(shape=(image_size, image_size, 1), dtype="float32", name=INPUT_NAME)
    features = ARCHITECTURES[model_config.architecture].builder(model_config, image)
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
    if _normalize_weights(model_config.weights) is None:
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


# ---------------------------------------------------------------------------------------
# Backbone and layers.
# ---------------------------------------------------------------------------------------


def _is_backbone_layer(layer) -> bool:
    """Returns whether a layer belongs to the backbone (not input, preprocessing or head)."""
    import keras

    name = layer.name
    return not (
        isinstance(layer, keras.layers.InputLayer)
        or name in (INPUT_NAME, FEATURES_NAME, OUTPUT_NAME)
        or name.startswith(PREPROCESS_PREFIX)
        or name.startswith(HEAD_PREFIX)
    )


def backbone_layer_names(model: keras.Model) -> list[str]:
    """Returns the backbone's layer names in topological order.

    The backbone is every layer except the "image" input, "preprocess_*" layers, the
    "features" pooling, "head_*" layers and "predictions"; names survive saving, so this
    works on loaded models too.

    Args:
        model: A model from build_model (or a loaded one).

    Returns:
        Layer names, input side first.
    """
    return [layer.name for layer in model.layers if _is_backbone_layer(layer)]


def freeze_backbone(model: keras.Model) -> None:
    """Makes every backbone layer non-trainable (BatchNormalization then runs in inference mode).

    Args:
        model: A model from build_model. Compile it again afterwards.
    """
    for layer in model.layers:
        if _is_backbone_layer(layer):
            layer.trainable = False


def unfreeze_top_layers(model: keras.Model, n_layers: int) -> list[str]:
    """Makes the top n backbone layers trainable, keeping BatchNormalization frozen.

    BatchNormalization layers stay frozen (as the Keras transfer-learning guide
    recommends) so that their ImageNet statistics are not wrecked by small batches.
    Compile the model again afterwards, with a lower learning rate.

    Args:
        model: A model from build_model.
        n_layers: How many backbone layers, counted from the top, to consider.

    Returns:
        Names of the layers made trainable.
    """
    import keras

    if n_layers < 0:
        raise ValueError(f"n_layers must be 0 or more, not {n_layers}.")
    names = backbone_layer_names(model)
    top_names = names[len(names) - min(n_layers, len(names)):]
    unfrozen = []
    for name in top_names:
        layer = model.get_layer(name)
        if isinstance(layer, keras.layers.BatchNormalization):
            continue
        layer.trainable = True
        unfrozen.append(name)
    return unfrozen


def last_conv_layer_name(model: keras.Model) -> str:
    """Returns the last layer with a 4-D (spatial) output before pooling or flattening.

    Trailing pooling and dropout layers are skipped, so the CNN gives its last
    convolution (or its BatchNormalization) and backbones their final activation.

    Args:
        model: A Functional model.

    Returns:
        The layer name, for Grad-CAM.

    Raises:
        ValueError: The model has no spatial layer.
    """
    import keras

    skipped = (
        keras.layers.InputLayer,
        keras.layers.MaxPooling2D,
        keras.layers.AveragePooling2D,
        keras.layers.Dropout,
        keras.layers.SpatialDropout2D,
    )
    for layer in reversed(model.layers):
        if isinstance(layer, skipped) or layer.name.startswith(PREPROCESS_PREFIX):
            continue
        if len(layer.output.shape) == 4:
            return layer.name
    raise ValueError(f"Model {model.name!r} has no layer with a 4-D output.")


def count_parameters(model: keras.Model) -> dict[str, int]:
    """Counts weights.

    Args:
        model: Any built Keras model.

    Returns:
        {"total", "trainable", "non_trainable"} numbers of scalars.
    """
    trainable = sum(int(math.prod(weight.shape)) for weight in model.trainable_weights)
    total = sum(int(math.prod(weight.shape)) for weight in model.weights)
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


_KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")


def estimate_flops(model: keras.Model) -> int:
    """Estimates forward FLOPs for one image, analytically.

    Counts 2 FLOPs per multiply-add of Conv2D, DepthwiseConv2D, SeparableConv2D and Dense
    layers (2 x output positions x kernel size), which dominate these networks; biases,
    BatchNormalization, activations, pooling and element-wise ops are ignored (a few %).

    Args:
        model: A built Functional model.

    Returns:
        FLOPs per image.
    """
    from keras import layers

    total = 0
    for layer in model.layers:
        if not isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D, layers.Dense)):
            continue
        kernel_size = sum(int(math.prod(weight.shape)) for weight in layer.weights if weight.name in _KERNEL_NAMES)
        positions = int(math.prod(dim for dim in layer.output.shape[1:-1] if dim is not None))
        total += 2 * positions * kernel_size
    return total


# ---------------------------------------------------------------------------------------
# Compiling.
# ---------------------------------------------------------------------------------------


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
    "val_accuracy", "val_auc".

    Args:
        model: A model from build_model.
        train_config: Optimizer name and learning rate.
        num_classes: Number of classes.

    Returns:
        The same model, compiled.
    """
    import keras
    from zoidberg.keras_metrics import SparseMacroAUC

    _check_num_classes(num_classes)
    optimizer = build_optimizer(train_config.optimizer, train_config.learning_rate)
    if num_classes == 2:
        loss = "binary_crossentropy"
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    else:
        loss = "sparse_categorical_crossentropy"
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy"), SparseMacroAUC(num_classes, name="auc")]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=False)
    return model


METRIC_NAMES = ("loss", "accuracy", "auc")
