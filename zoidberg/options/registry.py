"""The TensorFlow-free registry: architectures with their hyperparameters, and the training options."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# This module imports nothing from TensorFlow, Keras or the rest of Zoidberg: the CLI's
# parser, the dashboard's forms, the configuration classes and the tuning space all read
# it, and none of them should wait seconds for TensorFlow to load.

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
CLASS_WEIGHTINGS = ("balanced", "none")
TRANSFER_MODES = ("end-to-end", "frozen", "fine-tune")
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
MOBILENET_V2_ROWS = (96, 128, 160, 192, 224)
KINDS = ("int", "float", "bool", "choice")

AUGMENTATION_HELP = (
    "Light X-ray augmentation: small rotations, zooms, shifts and contrast changes "
    "(no flips: the heart sits on the left)."
)


@dataclass(frozen=True)
class HyperParameter:
    """One option of a model or of its training, described once for every consumer.

    The Train form, the Tune form, the CLI flags and their --help, the search space and
    the validation of TrainConfig are all generated from these entries.

    Attributes:
        name: The ModelConfig or TrainConfig field it sets.
        kind: "int", "float", "bool" or "choice".
        default: Value used when nothing else is chosen.
        min_value: Lowest value for "int" and "float" (inclusive unless min_exclusive).
        max_value: Highest value for "int" and "float".
        step: Widget and grid step in linear units, or None for a free float. Tuners ignore
            it when `log` is set (keras-tuner treats a step as a factor there).
        choices: The allowed values for "choice".
        log: Whether a search samples this range on a log scale.
        help: One sentence for a widget tooltip and the CLI's --help.
        label: Widget label (default: the name, spelled out).
        flag: CLI flag (default: --name with dashes).
        values: Discrete values a form offers on a select slider ("int" and "float").
        min_exclusive: Whether min_value itself is refused (a learning rate of 0).
        tunable: Whether a search space may vary it.
        tuned: Whether a default search varies it.
        search: The default search range, narrower than the valid one: any of min_value,
            max_value, step, or choices (which makes the dimension a list of values).
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
    label: str = ""
    flag: str = ""
    values: tuple = ()
    min_exclusive: bool = False
    tunable: bool = True
    tuned: bool = False
    search: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"HyperParameter kind must be int, float, bool or choice, not {self.kind!r}.")
        if self.kind == "choice" and self.default not in self.choices:
            raise ValueError(f"Default {self.default!r} of {self.name} is not among its choices.")

    @property
    def display_label(self) -> str:
        """The widget label: `label`, or the name spelled out ("Base filters")."""
        return self.label or self.name.replace("_", " ").capitalize()

    @property
    def cli_flag(self) -> str:
        """The CLI flag, e.g. "--learning-rate" (or the entry's own `flag`)."""
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def short_name(self) -> str:
        """The flag without dashes, as an identifier ("patience"): widget keys use it."""
        return self.cli_flag.lstrip("-").replace("-", "_")

    def check(self, value: Any) -> None:
        """Raises ValueError, saying what to change, unless `value` is valid for this option.

        Args:
            value: A candidate value.
        """
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, not {value!r}.")
            return
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"{self.name} must be one of {', '.join(map(str, self.choices))}, not {value!r}.")
            return
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "int":
            if not (number and float(value).is_integer() and self._in_range(value)):
                raise ValueError(
                    f"{self.name} must be a whole number from {self.min_value} to {self.max_value}, not {value!r}."
                )
            return
        if not (number and math.isfinite(value) and self._in_range(value)):
            low = f"above {self.min_value:g}" if self.min_exclusive else f"at least {self.min_value:g}"
            raise ValueError(
                f"{self.name} must be {low} and at most {self.max_value:g} (e.g. {self.default:g}), not {value!r}."
            )

    def _in_range(self, value: float) -> bool:
        """Tells whether a number lies within [min_value, max_value] (or above an exclusive minimum)."""
        if self.min_value is not None and (value < self.min_value or (self.min_exclusive and value == self.min_value)):
            return False
        return self.max_value is None or value <= self.max_value


@dataclass(frozen=True)
class Backbone:
    """How to build one keras.applications backbone and where Keras publishes its weights.

    Attributes:
        label: Human-readable name.
        application: Class name in keras.applications.
        preprocessing: "tf" ([-1, 1]), "torch" (ImageNet mean/std) or "efficientnet" (0..255).
        weights_url: Folder URL of the official no-top weight files.
        weights_file: The no-top file name; empty for MobileNetV2, whose name depends on
            alpha and the input rows.
        description: One or two sentences for the UI.
    """

    label: str
    application: str
    preprocessing: str
    weights_url: str
    weights_file: str = ""
    description: str = ""


@dataclass(frozen=True)
class ArchitectureSpec:
    """One architecture of the registry.

    Attributes:
        name: Registry key, stored as ModelConfig.architecture; zoidberg.models.build has
            the builder of the same name.
        label: Human-readable name for the UI.
        hyperparameters: The ModelConfig fields this architecture uses.
        min_image_size: Smallest square input side in pixels.
        pretrained_capable: Whether ImageNet weights exist for it.
        description: One or two sentences for the UI.
    """

    name: str
    label: str
    hyperparameters: tuple[HyperParameter, ...]
    min_image_size: int
    pretrained_capable: bool
    description: str

    @property
    def hyperparameter_names(self) -> tuple[str, ...]:
        """Returns the ModelConfig field names this architecture uses."""
        return tuple(hyperparameter.name for hyperparameter in self.hyperparameters)


# ---------------------------------------------------------------------------------------
# Architectures.
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


BACKBONES = {
    "mobilenetv2": Backbone(
        label="MobileNetV2",
        application="MobileNetV2",
        preprocessing="tf",
        weights_url="https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/",
        description="Light inverted-residual network (2.3M parameters at alpha 1.0); fast on CPU.",
    ),
    "efficientnetb0": Backbone(
        label="EfficientNetB0",
        application="EfficientNetB0",
        preprocessing="efficientnet",
        weights_url="https://storage.googleapis.com/keras-applications/",
        weights_file="efficientnetb0_notop.h5",
        description="Compound-scaled network with squeeze-excitation (4M parameters); accurate but slower.",
    ),
    "resnet50v2": Backbone(
        label="ResNet50V2",
        application="ResNet50V2",
        preprocessing="tf",
        weights_url="https://storage.googleapis.com/tensorflow/keras-applications/resnet/",
        weights_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        description="Pre-activation residual network (23.6M parameters); strong baseline, heavy on CPU.",
    ),
    "densenet121": Backbone(
        label="DenseNet121",
        application="DenseNet121",
        preprocessing="torch",
        weights_url="https://storage.googleapis.com/tensorflow/keras-applications/densenet/",
        weights_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        description="Densely connected network (7M parameters) popular for chest X-rays (CheXNet).",
    ),
}


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
        tuned=True,
        search={"max_value": 0.5, "step": 0.1},
    )


# Default search ranges are narrower than the widget ranges: one or two conv blocks at
# 128 px flatten to a huge Dense layer, and very wide layers cost minutes per trial on a CPU.
_CNN_HYPERPARAMETERS = (
    HyperParameter(
        "conv_blocks", "int", 3, min_value=1, max_value=5, step=1,
        help="Number of Conv2D + MaxPooling2D blocks; each halves the feature map.",
        tuned=True, search={"min_value": 2},
    ),
    HyperParameter(
        "base_filters", "int", 32, min_value=8, max_value=128, step=8,
        help="Filters in the first block; every next block doubles them.",
        tuned=True, search={"max_value": 64},
    ),
    HyperParameter(
        "kernel_size", "choice", 3, choices=(3, 5, 7),
        help="Side of the square convolution kernels; larger kernels need larger images.",
    ),
    HyperParameter(
        "dense_units", "int", 128, min_value=16, max_value=512, step=16,
        help="Units of the hidden Dense layer before the output.",
        tuned=True, search={"min_value": 32, "max_value": 256, "step": 32},
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
            tuned=True,
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


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "cnn": ArchitectureSpec(
        name="cnn",
        label="Custom CNN",
        hyperparameters=_CNN_HYPERPARAMETERS,
        min_image_size=16,
        pretrained_capable=False,
        description="Small Conv2D/MaxPooling2D stack from the design notes, trained from scratch.",
    ),
    **{
        name: ArchitectureSpec(
            name=name,
            label=backbone.label,
            hyperparameters=_backbone_hyperparameters(with_alpha=name == "mobilenetv2"),
            min_image_size=32,
            pretrained_capable=True,
            description=backbone.description,
        )
        for name, backbone in BACKBONES.items()
    },
}


# ---------------------------------------------------------------------------------------
# Training options: one entry per TrainConfig field, in form order.
# ---------------------------------------------------------------------------------------

TRAINING_OPTIONS: tuple[HyperParameter, ...] = (
    HyperParameter(
        "epochs", "int", 5, min_value=1, max_value=1000, step=1, tunable=False,
        help="Epochs per fold.",
    ),
    HyperParameter(
        "learning_rate", "float", 1e-3, min_value=0.0, max_value=1.0, min_exclusive=True, log=True,
        values=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
        help="Step size of the optimizer; 0.001 suits Adam, 0.01 suits SGD.",
        tuned=True, search={"min_value": 1e-4, "max_value": 1e-2},
    ),
    HyperParameter(
        "batch_size", "int", 32, min_value=1, max_value=1024, values=(4, 8, 16, 32, 64, 128, 256),
        help="Images per gradient step.",
        tuned=True, search={"choices": (16, 32, 64)},
    ),
    HyperParameter(
        "optimizer", "choice", "adam", choices=OPTIMIZERS, tunable=False,
        help="Optimizer; sgd uses momentum 0.9.",
    ),
    HyperParameter(
        "early_stopping_patience", "int", 3, min_value=0, max_value=1000, step=1, flag="--patience", tunable=False,
        label="Early-stopping patience",
        help="Stop a fold after this many epochs without a lower validation loss (0 = off); the best weights are kept.",
    ),
    HyperParameter(
        "class_weighting", "choice", "balanced", choices=CLASS_WEIGHTINGS, tunable=False,
        help="balanced weighs each class by the inverse of its frequency, so the minority class counts as much.",
    ),
    HyperParameter(
        "augmentation", "bool", False, flag="--augment",
        help=AUGMENTATION_HELP,
        tuned=True,
    ),
    HyperParameter(
        "augmentation_policy", "choice", "light", choices=("light", "acquisition"), label="Augmentation policy",
        help="What augmentation does when on: light (small rotations, zooms, shifts, contrast); acquisition (as light "
        "plus random crops, brightness, contrast and gamma, slight blur and noise: the ways films differ between "
        "machines and hospitals).",
    ),
    HyperParameter(
        "lr_schedule", "choice", "constant", choices=("constant", "cosine"), label="Learning-rate schedule",
        help="constant; cosine: decays from the learning rate towards zero over the epochs (each phase of fine-tuning).",
    ),
    HyperParameter(
        "label_smoothing", "float", 0.0, min_value=0.0, max_value=0.3, step=0.05,
        help="Moves the 0/1 training targets this far towards the other classes, so the model is less "
        "over-confident on new X-rays; 0 turns it off.",
    ),
)


# ---------------------------------------------------------------------------------------
# Image preprocessing: one entry per DataConfig field besides the folder, label mode and size.
# Applied identically when training, predicting and evaluating (zoidberg.data.imaging).
# ---------------------------------------------------------------------------------------

PREPROCESSING_OPTIONS: tuple[HyperParameter, ...] = (
    HyperParameter(
        "resize", "choice", "stretch", choices=("stretch", "pad"), tunable=False, label="Resize",
        help="stretch: squeeze every image into the square (as the Kaggle 224-px copy was made); pad: keep the "
        "aspect ratio and fill the rest with black.",
    ),
    HyperParameter(
        "enhance", "choice", "none", choices=("none", "equalize", "clahe"), tunable=False, label="Contrast",
        help="none; equalize: global histogram equalization; clahe: contrast-limited adaptive equalization, which "
        "evens out exposure differences between machines. Applied after resizing, the same for every file.",
    ),
)


def preprocessing_option(name: str) -> HyperParameter:
    """Returns the preprocessing option called `name`.

    Raises:
        KeyError: No such option.
    """
    for option in PREPROCESSING_OPTIONS:
        if option.name == name:
            return option
    raise KeyError(name)


def training_option(name: str) -> HyperParameter:
    """Returns the training option called `name`.

    Raises:
        KeyError: No such option.
    """
    for option in TRAINING_OPTIONS:
        if option.name == name:
            return option
    raise KeyError(name)


def tunable_training_options() -> tuple[HyperParameter, ...]:
    """Returns the training options a search space may vary, in table order."""
    return tuple(option for option in TRAINING_OPTIONS if option.tunable)
