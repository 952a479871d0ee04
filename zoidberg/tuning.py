"""Hyperparameter search configuration: search spaces, patient-grouped split, trial tables, results.

The keras-tuner machinery (hypermodel, tuners, the worker's search loop) lives in
zoidberg.search, imported only when a search runs, so that this module, the CLI parser and
the dashboard's forms load without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from zoidberg.config import (
    _RUN_NAME_PATTERN,
    CLASS_WEIGHTINGS,
    OPTIMIZERS,
    DataConfig,
    ModelConfig,
    TrainConfig,
)
from zoidberg.models import ARCHITECTURES, HyperParameter
from zoidberg.runstore import Run, RunStore

Reporter = Callable[[str], None]

ALGORITHMS = ("random", "bayesian", "hyperband", "grid")
ALGORITHM_LABELS = {
    "random": "Random search",
    "bayesian": "Bayesian optimization (Gaussian process)",
    "hyperband": "Hyperband (successive halving of epochs)",
    "grid": "Grid search (every combination; small spaces only)",
}
# Objective name -> direction; all are measured on the patient-grouped validation part.
OBJECTIVES = {"val_auc": "max", "val_accuracy": "max", "val_loss": "min"}
OBJECTIVE_LABELS = {"val_auc": "validation AUC", "val_accuracy": "validation accuracy", "val_loss": "validation loss"}

# keras-tuner's working directory inside the run folder (runs/<id>/tuner/).
TUNER_PROJECT = "tuner"
# A grid larger than this is refused: grid search would never get past the first values.
MAX_GRID_POINTS = 1000
# Infeasible combinations (e.g. too many blocks for the image) fail as single trials; this
# many failures in a row end the search, because then the space itself is wrong.
MAX_CONSECUTIVE_FAILED_TRIALS = 5
HYPERBAND_FACTOR = 3
SEARCH_SPACE_KEYS = ("min_value", "max_value", "step", "choices", "log")

# Training hyperparameters every architecture shares; the registry holds only model ones.
TRAIN_HYPERPARAMETERS = (
    HyperParameter(
        "learning_rate", "float", 1e-3, min_value=1e-4, max_value=1e-2, log=True,
        help="Step size of the optimizer, searched on a log scale.",
    ),
    HyperParameter(
        "batch_size", "choice", 32, choices=(16, 32, 64),
        help="Images per gradient step.",
    ),
    HyperParameter(
        "augmentation", "bool", False,
        help="Light X-ray augmentation (small rotation, zoom, shift, contrast; no flips).",
    ),
)
# What a search tunes when the user changes nothing; every other hyperparameter is fixed
# at its registry default. The rule goes by field name, so it needs no per-architecture code.
DEFAULT_TUNED = (
    "learning_rate",
    "batch_size",
    "augmentation",
    "conv_blocks",
    "base_filters",
    "dense_units",
    "dropout_rate",
    "alpha",
)
# Default search ranges narrower than the registry's widget ranges, by field name: one or
# two conv blocks at 128 px flatten to a huge Dense layer, and very wide layers cost minutes
# per trial on a CPU. Each is intersected with the registry's range.
DEFAULT_TUNED_RANGES = {
    "conv_blocks": {"min_value": 2},
    "base_filters": {"max_value": 64},
    "dense_units": {"min_value": 32, "max_value": 256, "step": 32},
    "dropout_rate": {"max_value": 0.5, "step": 0.1},
}
# keras-tuner's Choice cannot hold None, so None travels through it as this text.
NONE_CHOICE = "none"
# Hyperband and keras-tuner bookkeeping values in a trial's hyperparameters.
TUNER_VALUE_PREFIX = "tuner/"


def _require(condition: bool, message: str) -> None:
    """Raises ValueError with a message that says what to change."""
    if not condition:
        raise ValueError(message)


# ---------------------------------------------------------------------------------------
# Search space.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter of a resolved search space: tuned over a range or choices, or fixed.

    Attributes:
        name: The ModelConfig or TrainConfig field it sets.
        kind: "int", "float", "bool" or "choice".
        target: "model" (ModelConfig) or "train" (TrainConfig).
        tuned: Whether the search varies it.
        value: The fixed value, or the value a search tries first when tuned.
        min_value: Lowest value of a tuned int or float.
        max_value: Highest value of a tuned int or float.
        step: Grid step (linear), or the factor between grid values on a log scale.
        choices: Values of a tuned bool or choice.
        log: Whether a tuned int or float is sampled on a log scale.
        help: One sentence for the UI.
    """

    name: str
    kind: str
    target: str
    tuned: bool
    value: Any
    min_value: float | int | None = None
    max_value: float | int | None = None
    step: float | int | None = None
    choices: tuple = ()
    log: bool = False
    help: str = ""

    @property
    def is_range(self) -> bool:
        """Whether it is tuned over a numeric range (rather than a list of values)."""
        return self.tuned and self.kind in ("int", "float")

    def grid_points(self) -> int:
        """Returns how many values grid search tries (keras-tuner's count; 1 when fixed)."""
        if not self.tuned:
            return 1
        if not self.is_range:
            return len(self.choices)
        if self.step is None:
            # keras-tuner samples 10 values when a range has no step.
            return 1 + int(self.max_value - self.min_value) if self.kind == "int" and not self.log else 10
        if self.log:
            return int(math.log(self.max_value / self.min_value, self.step) + 1e-8) + 1
        return int((self.max_value - self.min_value) // self.step + 1)

    def describe(self) -> str:
        """Returns the range, the choices or the fixed value as short text."""
        if not self.tuned:
            return f"fixed at {_format_value(self.value)}"
        if self.is_range:
            scale = " (log scale)" if self.log else ""
            return f"{_format_value(self.min_value)} … {_format_value(self.max_value)}{scale}"
        return ", ".join(_format_value(choice) for choice in self.choices)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict."""
        return dataclasses.asdict(self)


def _format_value(value: Any) -> str:
    """Formats a hyperparameter value compactly (1e-3 rather than 0.001000)."""
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def tunable_hyperparameters(architecture: str) -> tuple[tuple[HyperParameter, str], ...]:
    """Returns every hyperparameter a search over `architecture` can vary, with its target.

    Args:
        architecture: Registry key.

    Returns:
        (HyperParameter, "model" or "train") pairs: the registry's model hyperparameters,
        then the training ones.

    Raises:
        ValueError: For an unknown architecture.
    """
    _require(
        architecture in ARCHITECTURES,
        f"Unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}.",
    )
    return tuple((parameter, "model") for parameter in ARCHITECTURES[architecture].hyperparameters) + tuple(
        (parameter, "train") for parameter in TRAIN_HYPERPARAMETERS
    )


def _coerce(parameter: HyperParameter, value: Any, what: str) -> Any:
    """Converts a user's value to the field's type, or raises ValueError naming it."""
    if value is None or isinstance(parameter.default, str) or parameter.default is None:
        return value
    if isinstance(parameter.default, bool):
        _require(isinstance(value, bool), f"{what} must be true or false, not {value!r}.")
        return value
    _require(
        isinstance(value, (int, float)) and not isinstance(value, bool),
        f"{what} must be a number, not {value!r}.",
    )
    if isinstance(parameter.default, int):
        _require(float(value).is_integer(), f"{what} must be a whole number, not {value!r}.")
        return int(value)
    return float(value)


def _check_field_value(architecture: str, target: str, name: str, value: Any, what: str) -> None:
    """Checks one value with the config class's own validation, prefixing its message."""
    try:
        if target == "model":
            ModelConfig(architecture=architecture, **{name: value})
        else:
            TrainConfig(**{name: value})
    except ValueError as error:
        raise ValueError(f"Search space: {what}: {error}") from None


def _default_dimension(parameter: HyperParameter, target: str) -> Dimension:
    """Returns the dimension a hyperparameter has when the user overrides nothing."""
    tuned = parameter.name in DEFAULT_TUNED
    choices = (False, True) if parameter.kind == "bool" else tuple(parameter.choices)
    narrower = DEFAULT_TUNED_RANGES.get(parameter.name, {})
    low, high = parameter.min_value, parameter.max_value
    if low is not None and high is not None:
        low = max(low, narrower.get("min_value", low))
        high = min(high, narrower.get("max_value", high))
    return Dimension(
        name=parameter.name,
        kind=parameter.kind,
        target=target,
        tuned=tuned,
        value=parameter.default,
        min_value=low,
        max_value=high,
        # The registry's step is a linear widget step; keras-tuner reads a step on a log
        # scale as a factor, so log ranges drop it.
        step=None if parameter.log else narrower.get("step", parameter.step),
        choices=choices,
        log=parameter.log,
        help=parameter.help,
    )


def default_dimension(architecture: str, name: str) -> Dimension:
    """Returns a hyperparameter's default dimension before fitting it to an image size.

    Args:
        architecture: Registry key.
        name: Hyperparameter name.

    Returns:
        The Dimension (the UI starts its widgets from it).
    """
    for parameter, target in tunable_hyperparameters(architecture):
        if parameter.name == name:
            return _default_dimension(parameter, target)
    raise ValueError(f"{name!r} is not a hyperparameter of {architecture}.")


def _tuned_dimension(parameter: HyperParameter, target: str, override: Mapping[str, Any], architecture: str) -> Dimension:
    """Returns a tuned dimension from the registry's range with the user's changes."""
    name = parameter.name
    unknown = sorted(set(override) - set(SEARCH_SPACE_KEYS))
    _require(
        not unknown,
        f"Search space: {name} has unknown key(s) {', '.join(unknown)}; use {', '.join(SEARCH_SPACE_KEYS)}.",
    )
    base = _default_dimension(parameter, target)
    if parameter.kind in ("bool", "choice"):
        choices = override.get("choices", base.choices)
        _require(
            isinstance(choices, (list, tuple)) and len(choices) > 0,
            f"Search space: {name} needs a non-empty list of choices.",
        )
        choices = tuple(_coerce(parameter, choice, f"a choice of {name}") for choice in choices)
        _require(len(set(choices)) == len(choices), f"Search space: {name} lists a choice twice.")
        for choice in choices:
            _check_field_value(architecture, target, name, choice, f"choice {choice!r} of {name}")
        if len(choices) == 1:
            # One choice is a fixed value; keras-tuner would only count it as a dimension.
            return dataclasses.replace(base, tuned=False, value=choices[0], choices=choices)
        value = parameter.default if parameter.default in choices else choices[0]
        return dataclasses.replace(base, tuned=True, value=value, choices=choices)
    log = bool(override.get("log", base.log))
    low = _coerce(parameter, override.get("min_value", base.min_value), f"min_value of {name}")
    high = _coerce(parameter, override.get("max_value", base.max_value), f"max_value of {name}")
    step = override.get("step", base.step if log == base.log else None)
    _require(low is not None and high is not None, f"Search space: {name} needs min_value and max_value.")
    _require(low < high, f"Search space: {name} min_value {low:g} must be below max_value {high:g} (or fix {name} instead).")
    _require(not log or low > 0, f"Search space: {name} on a log scale needs min_value above 0, not {low:g}.")
    if step is not None:
        step = _coerce(parameter, step, f"step of {name}")
        _require(step > (1 if log else 0), f"Search space: step of {name} must be above {'1 (a factor on a log scale)' if log else '0'}, not {step}.")
    for bound in (low, high):
        _check_field_value(architecture, target, name, bound, f"{name} = {bound:g}")
    value = parameter.default if low <= parameter.default <= high else low
    return dataclasses.replace(base, tuned=True, value=value, min_value=low, max_value=high, step=step, log=log)


def _fixed_dimension(parameter: HyperParameter, target: str, value: Any, architecture: str) -> Dimension:
    """Returns a fixed dimension holding the user's value."""
    value = _coerce(parameter, value, parameter.name)
    _check_field_value(architecture, target, parameter.name, value, f"{parameter.name} = {value!r}")
    return dataclasses.replace(_default_dimension(parameter, target), tuned=False, value=value)


def _lowest(dimension: Dimension) -> Any:
    """Returns the least demanding value of a dimension (its minimum, or first choice)."""
    if not dimension.tuned:
        return dimension.value
    if dimension.is_range:
        return dimension.min_value
    numeric = all(isinstance(choice, (int, float)) and not isinstance(choice, bool) for choice in dimension.choices)
    return min(dimension.choices) if numeric else dimension.choices[0]


def _buildable(architecture: str, values: Mapping[str, Any], image_size: int) -> str | None:
    """Returns None when a model configuration fits the image size, else the reason."""
    from zoidberg.models import check_model_config

    try:
        check_model_config(ModelConfig(architecture=architecture, **values), image_size)
    except ValueError as error:
        return str(error)
    return None


def _fit_to_image_size(
    dimensions: list[Dimension], architecture: str, image_size: int, overridden: set[str]
) -> list[Dimension]:
    """Narrows default ranges to values that can be built at this image size.

    Each value is tried with the other hyperparameters at their least demanding values
    (e.g. the most conv blocks with the smallest kernel). Default ranges are narrowed
    silently; a range or value the user chose that cannot be built is an error.
    """
    model_dimensions = [dimension for dimension in dimensions if dimension.target == "model"]
    base = {dimension.name: _lowest(dimension) for dimension in model_dimensions}
    reason = _buildable(architecture, base, image_size)
    _require(reason is None, f"Search space: even the smallest model cannot be built: {reason}")
    fitted = []
    for dimension in dimensions:
        if dimension.target == "model" and dimension.tuned:
            dimension = _fit_dimension(dimension, base, architecture, image_size, dimension.name in overridden)
        fitted.append(dimension)
    return fitted


def _fit_dimension(dimension: Dimension, base: dict, architecture: str, image_size: int, overridden: bool) -> Dimension:
    """Narrows (or, for a user's range, checks) one tuned model dimension."""
    name = dimension.name

    def reason_for(value):
        return _buildable(architecture, {**base, name: value}, image_size)

    if dimension.is_range:
        reason = reason_for(dimension.max_value)
        if reason is None:
            return dimension
        _require(
            not overridden and dimension.kind == "int",
            f"Search space: {name} up to {_format_value(dimension.max_value)} cannot be built at {image_size} px: {reason}",
        )
        high = dimension.max_value
        step = int(dimension.step or 1)
        while high - step >= dimension.min_value and reason_for(high) is not None:
            high -= step
        if high <= dimension.min_value or reason_for(high) is not None:
            return dataclasses.replace(dimension, tuned=False, value=dimension.min_value)
        return dataclasses.replace(dimension, max_value=high, value=min(dimension.value, high))
    failing = {choice: reason_for(choice) for choice in dimension.choices}
    failing = {choice: reason for choice, reason in failing.items() if reason is not None}
    if not failing:
        return dimension
    first = next(iter(failing))
    _require(
        not overridden,
        f"Search space: {name} = {_format_value(first)} cannot be built at {image_size} px: {failing[first]}",
    )
    kept = tuple(choice for choice in dimension.choices if choice not in failing)
    if len(kept) <= 1:
        return dataclasses.replace(dimension, tuned=False, value=kept[0] if kept else dimension.value, choices=kept)
    return dataclasses.replace(dimension, choices=kept, value=dimension.value if dimension.value in kept else kept[0])


def resolve_search_space(architecture: str, search_space: Mapping[str, Any], image_size: int) -> tuple[Dimension, ...]:
    """Builds the search space from the registry and the user's overrides.

    Args:
        architecture: Registry key.
        search_space: {name: {min_value, max_value, step, choices, log}} to tune a
            hyperparameter over an edited range (an empty dict keeps the registry's), or
            {name: value} to fix it. Names left out keep the defaults: DEFAULT_TUNED names
            are tuned over the registry's range, the rest are fixed at the registry default.
        image_size: Input side in pixels; default ranges are narrowed to what fits.

    Returns:
        One Dimension per hyperparameter the architecture and training use.

    Raises:
        ValueError: Naming the hyperparameter and what to change.
    """
    _require(isinstance(search_space, Mapping), "The search space must be a mapping of hyperparameter names.")
    parameters = tunable_hyperparameters(architecture)
    known = [parameter.name for parameter, _ in parameters]
    unknown = sorted(set(search_space) - set(known))
    _require(
        not unknown,
        f"Search space: {', '.join(map(repr, unknown))} is not a hyperparameter of {architecture}; "
        f"choose from {', '.join(known)}.",
    )
    dimensions = []
    for parameter, target in parameters:
        if parameter.name not in search_space:
            dimensions.append(_default_dimension(parameter, target))
        elif isinstance(search_space[parameter.name], Mapping):
            dimensions.append(_tuned_dimension(parameter, target, search_space[parameter.name], architecture))
        else:
            dimensions.append(_fixed_dimension(parameter, target, search_space[parameter.name], architecture))
    # Only an upper bound or choices the user gave are errors when they cannot be built;
    # defaults are narrowed to the image size without a word.
    chosen = {
        name
        for name, override in search_space.items()
        if isinstance(override, Mapping) and ("max_value" in override or "choices" in override)
    }
    return tuple(_fit_to_image_size(dimensions, architecture, image_size, chosen))


def grid_size(dimensions: tuple[Dimension, ...]) -> int:
    """Returns the number of combinations grid search would try."""
    return math.prod(dimension.grid_points() for dimension in dimensions)


# ---------------------------------------------------------------------------------------
# Configuration.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TuneConfig:
    """Everything one tuning run needs, saved as config.json.

    Attributes:
        data: Which images, label mode and image size.
        architecture: Registry key of the architecture to tune.
        search_space: Overrides of the default space (see resolve_search_space).
        algorithm: "random", "bayesian", "hyperband" or "grid".
        objective: "val_auc", "val_accuracy" or "val_loss" on the validation part.
        max_trials: Most configurations to try.
        epochs_per_trial: Epochs each trial trains (Hyperband: the most any trial trains).
        seed: Seed of the split, the search and each trial (trial i uses seed + i).
        validation_fraction: Share of patients held out for the objective.
        optimizer: Optimizer of every trial.
        class_weighting: "balanced" or "none".
        run_name: A readable run name.
    """

    data: DataConfig
    architecture: str = "cnn"
    search_space: Mapping[str, Any] = field(default_factory=dict, hash=False)
    algorithm: str = "bayesian"
    objective: str = "val_auc"
    max_trials: int = 10
    epochs_per_trial: int = 3
    seed: int = 42
    validation_fraction: float = 0.2
    optimizer: str = "adam"
    class_weighting: str = "balanced"
    run_name: str = ""

    def __post_init__(self):
        _require(
            self.algorithm in ALGORITHMS,
            f"algorithm must be one of {', '.join(ALGORITHMS)}, not {self.algorithm!r}.",
        )
        _require(
            self.objective in OBJECTIVES,
            f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}.",
        )
        _require(
            isinstance(self.max_trials, int) and 1 <= self.max_trials <= 1000,
            f"max_trials must be a whole number from 1 to 1000, not {self.max_trials!r}.",
        )
        _require(
            isinstance(self.epochs_per_trial, int) and 1 <= self.epochs_per_trial <= 1000,
            f"epochs per trial must be a whole number from 1 to 1000, not {self.epochs_per_trial!r}.",
        )
        _require(
            isinstance(self.seed, int) and 0 <= self.seed < 2**31,
            f"seed must be a whole number from 0 to 2147483647, not {self.seed!r}.",
        )
        _require(
            0.05 <= self.validation_fraction <= 0.5,
            f"validation_fraction must be from 0.05 to 0.5, not {self.validation_fraction!r}.",
        )
        _require(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}.")
        _require(self.class_weighting in CLASS_WEIGHTINGS, f"class_weighting must be one of {', '.join(CLASS_WEIGHTINGS)}.")
        _require(
            bool(_RUN_NAME_PATTERN.match(self.run_name)),
            "run_name may use letters, digits, spaces and . , : + = @ ( ) - _ (at most 80).",
        )
        spec = ARCHITECTURES.get(self.architecture)
        _require(
            spec is not None,
            f"Unknown architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}.",
        )
        _require(
            self.data.image_size >= spec.min_image_size,
            f"{spec.label} needs images of at least {spec.min_image_size} px; raise image size from {self.data.image_size}.",
        )
        dimensions = self.dimensions()
        # The fixed values must make a valid configuration together (e.g. a transfer mode
        # that needs weights with weights fixed at none); each value alone was checked.
        configs_for_values(self, {})
        if self.algorithm == "grid":
            points = grid_size(dimensions)
            _require(
                points <= MAX_GRID_POINTS,
                f"Grid search tries every combination and this space has {points:,}; narrow the ranges, "
                f"give steps or fix hyperparameters to reach at most {MAX_GRID_POINTS:,}, "
                "or use random, Bayesian or Hyperband search.",
            )

    def dimensions(self) -> tuple[Dimension, ...]:
        """Returns the resolved search space (validated; raises ValueError)."""
        return resolve_search_space(self.architecture, self.search_space, self.data.image_size)

    def tuned_dimensions(self) -> tuple[Dimension, ...]:
        """Returns only the dimensions the search varies."""
        return tuple(dimension for dimension in self.dimensions() if dimension.tuned)

    @property
    def direction(self) -> str:
        """"max" or "min": how the objective improves."""
        return OBJECTIVES[self.objective]

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict."""
        payload = dataclasses.asdict(self)
        payload["search_space"] = {name: _jsonable(value) for name, value in dict(self.search_space).items()}
        return payload

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> "TuneConfig":
        """Builds a validated config from a dict (config.json), ignoring unknown keys."""
        payload = dict(payload)
        names = {item.name for item in dataclasses.fields(cls)} - {"data"}
        data_names = {item.name for item in dataclasses.fields(DataConfig)}
        data = DataConfig(**{key: value for key, value in dict(payload.get("data", {})).items() if key in data_names})
        return cls(data=data, **{key: value for key, value in payload.items() if key in names})


def _jsonable(value: Any) -> Any:
    """Turns tuples inside a search-space entry into lists for JSON."""
    if isinstance(value, Mapping):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    return value


def configs_for_values(config: TuneConfig, values: Mapping[str, Any], epochs: int | None = None) -> tuple[ModelConfig, TrainConfig]:
    """Returns the model and training configs of one point of the search space.

    Args:
        config: The tuning configuration.
        values: {name: value} of the tuned hyperparameters (fixed ones come from config).
        epochs: Epochs to train (default: config.epochs_per_trial).

    Returns:
        (ModelConfig, TrainConfig); trials train without early stopping.
    """
    model_values, train_values = {}, {}
    for dimension in config.dimensions():
        value = values.get(dimension.name, dimension.value) if dimension.tuned else dimension.value
        (model_values if dimension.target == "model" else train_values)[dimension.name] = value
    model = ModelConfig(architecture=config.architecture, **model_values)
    train = TrainConfig(
        epochs=int(epochs or config.epochs_per_trial),
        optimizer=config.optimizer,
        class_weighting=config.class_weighting,
        early_stopping_patience=0,
        **train_values,
    )
    return model, train


def check_tune_config(config: TuneConfig, dataset=None, *, check_weights: bool = True) -> None:
    """Checks a tuning config against the weights files and the data before anything trains.

    Args:
        config: The tuning configuration.
        dataset: The loaded Dataset, to check that the split has patients of each class.
        check_weights: Resolve ImageNet weights files for every weights value searched.

    Raises:
        ValueError: With what to change.
        FileNotFoundError: Pretrained weights were asked for and no local file has them.
    """
    from zoidberg.models import check_model_config

    dimensions = config.dimensions()
    if check_weights:
        weights = next((dimension for dimension in dimensions if dimension.name == "weights"), None)
        values = (weights.choices if weights.tuned else (weights.value,)) if weights else (None,)
        for value in values:
            model, _ = configs_for_values(config, {"weights": value})
            check_model_config(dataclasses.replace(model, weights=value), config.data.image_size, check_weights=True)
    if dataset is not None:
        train_part, validation_part = tuning_split(dataset, config.validation_fraction, config.seed)
        for part, label in ((train_part, "training"), (validation_part, "validation")):
            missing = [name for name, count in dataset.class_counts(part).items() if count == 0]
            _require(
                not missing,
                f"The patient-grouped {label} part has no {', '.join(missing)} images; "
                "use more data or change the validation fraction.",
            )


# ---------------------------------------------------------------------------------------
# Split.
# ---------------------------------------------------------------------------------------


def tuning_split(dataset, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits the pooled train+val images into patient-disjoint train and validation parts.

    The test split is never part of either: only Dataset.training_indices() are split.

    Args:
        dataset: A loaded Dataset.
        validation_fraction: Share of patients (about) in the validation part.
        seed: Split seed.

    Returns:
        (train_indices, validation_indices) into the dataset's arrays.
    """
    from zoidberg.folds import make_group_split

    indices = dataset.training_indices()
    train_positions, validation_positions = make_group_split(
        dataset.labels[indices], dataset.patients[indices], validation_fraction, seed
    )
    return indices[np.sort(train_positions)], indices[np.sort(validation_positions)]


def split_facts(dataset, train_indices: np.ndarray, validation_indices: np.ndarray) -> dict:
    """Describes the split for split.json and the UI."""
    return {
        "root": str(dataset.root),
        "fingerprint": dataset.fingerprint,
        "synthetic": dataset.synthetic,
        "class_names": list(dataset.class_names),
        "n_train": int(len(train_indices)),
        "n_validation": int(len(validation_indices)),
        "n_train_patients": int(len(np.unique(dataset.patients[train_indices]))),
        "n_validation_patients": int(len(np.unique(dataset.patients[validation_indices]))),
        "train_class_counts": dataset.class_counts(train_indices),
        "validation_class_counts": dataset.class_counts(validation_indices),
        "n_test_held_out": int(len(dataset.test_indices())),
        "validation_patients": sorted(map(str, np.unique(dataset.patients[validation_indices]))),
    }


def clean_values(values: Mapping[str, Any], dimensions: tuple[Dimension, ...] | None = None) -> dict[str, Any]:
    """Returns a trial's hyperparameter values without keras-tuner bookkeeping, None decoded.

    Args:
        values: keras-tuner's trial.hyperparameters.values.
        dimensions: The space, to decode "none" back to None where None is a choice.

    Returns:
        {name: value}.
    """
    none_choices = {dimension.name for dimension in dimensions or () if None in dimension.choices}
    cleaned = {}
    for name, value in values.items():
        if name.startswith(TUNER_VALUE_PREFIX):
            continue
        cleaned[name] = None if value == NONE_CHOICE and (name in none_choices or dimensions is None) else value
    return cleaned


# ---------------------------------------------------------------------------------------
# Results.
# ---------------------------------------------------------------------------------------


def trial_number(trial_id: str) -> int:
    """Returns the 1-based trial number of a keras-tuner trial id ("00" -> 1)."""
    return int(trial_id) + 1


def last_line(message: str | None) -> str | None:
    """Returns the last non-empty line of a traceback: the error itself."""
    if not message:
        return None
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[-1]
    # "keras_tuner.src.errors.FailedTrialError: 5 conv blocks ..." -> "5 conv blocks ...".
    head, _, rest = line.partition(": ")
    return rest if rest and "." in head and " " not in head else line


def _finite(value: Any) -> float | None:
    """Returns a float, or None for missing and non-finite values."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def trial_rows(oracle, config: TuneConfig, run: Run | None = None) -> list[dict]:
    """Tabulates every trial keras-tuner knows of, in trial order.

    Args:
        oracle: The tuner's oracle.
        config: The tuning configuration.
        run: The run, for trial durations.

    Returns:
        Rows {trial, trial_id, status, objective, hyperparameters, metrics, best_epoch,
        epochs, continues_trial, seconds, message}; status is "completed", "failed",
        "invalid" or "running" (unfinished: a resumed search runs it again).
    """
    dimensions = config.dimensions()
    seconds = (run.read_json("trial_seconds.json", {}) or {}) if run else {}
    rows = []
    for trial_id in sorted(oracle.trials, key=int):
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        metrics = {name: _finite(trial.metrics.get_last_value(name)) for name in sorted(trial.metrics.metrics)}
        status = str(trial.status).lower()
        parent = values.get("tuner/trial_id")
        rows.append(
            {
                "trial": trial_number(trial_id),
                "trial_id": trial_id,
                "status": status,
                "objective": _finite(trial.score) if status == "completed" else None,
                "hyperparameters": clean_values(values, dimensions),
                "metrics": metrics,
                "best_epoch": int(trial.best_step) + 1 if status == "completed" and trial.best_step is not None else None,
                "epochs": int(values.get("tuner/epochs", config.epochs_per_trial)),
                "continues_trial": trial_number(parent) if parent is not None else None,
                "seconds": seconds.get(trial_id),
                "message": last_line(trial.message),
            }
        )
    return rows


def best_row(rows: list[dict], direction: str) -> dict | None:
    """Returns the completed trial with the best objective, or None.

    Args:
        rows: Rows from trial_rows.
        direction: "max" or "min".
    """
    finished = [row for row in rows if row["status"] == "completed" and row["objective"] is not None]
    if not finished:
        return None
    pick = max if direction == "max" else min
    return pick(finished, key=lambda row: row["objective"])


def format_objective(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_values(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={_format_value(value)}" for name, value in values.items()) or "default configuration"


def make_summary(run: Run, config: TuneConfig, rows: list[dict], state: str) -> dict:
    """Builds summary.json: the best configuration and the full trial table."""
    best = best_row(rows, config.direction)
    summary = {
        "run_id": run.id,
        "kind": "tune",
        "state": state,
        "architecture": config.architecture,
        "algorithm": config.algorithm,
        "objective": config.objective,
        "direction": config.direction,
        "max_trials": config.max_trials,
        "n_trials": len(rows),
        "n_completed": sum(row["status"] == "completed" for row in rows),
        "n_failed": sum(row["status"] in ("failed", "invalid") for row in rows),
        "best_trial": best["trial"] if best else None,
        "best_objective": best["objective"] if best else None,
        "best_hyperparameters": best["hyperparameters"] if best else None,
        "best_model_config": None,
        "best_train_config": None,
        "search_space": [dimension.to_dict() for dimension in config.dimensions()],
        "split": run.read_json("split.json"),
        "trials": rows,
    }
    if best:
        model, train = configs_for_values(config, best["hyperparameters"], best["epochs"])
        summary["best_model_config"] = dataclasses.asdict(model)
        summary["best_train_config"] = dataclasses.asdict(train)
    return summary


# ---------------------------------------------------------------------------------------
# Running.
# ---------------------------------------------------------------------------------------


def run_tuning(run: Run, *, report: Reporter | None = None) -> dict:
    """Runs (or resumes) the search described by the run's config.json.

    keras-tuner keeps its state in runs/<id>/tuner/ and reloads it, so a resumed run
    keeps its finished trials, runs an unfinished one again and goes on.

    Args:
        run: A run of kind "tune" created by the run store.
        report: Optional callable receiving one-line progress messages.

    Returns:
        The summary (also saved as summary.json), whether completed or stopped.
    """
    from zoidberg.search import run_search

    return run_search(run, report=report)


# ---------------------------------------------------------------------------------------
# From tuning to cross-validation.
# ---------------------------------------------------------------------------------------


def load_tuning_results(tuning_run_id: str, runs_dir=None) -> tuple[Run, TuneConfig, list[dict]]:
    """Reads a tuning run's configuration and trial table.

    Raises:
        ValueError: The run is not a tuning run.
        RunNotFoundError: No such run.
    """
    run = RunStore(runs_dir).get(tuning_run_id)
    _require(run.kind == "tune", f"Run {tuning_run_id} is a {run.kind} run, not a tuning run.")
    config = TuneConfig.from_dict(run.config)
    summary = run.summary() or {}
    rows = summary.get("trials") or run.read_json("trials.json", []) or []
    return run, config, rows


def best_model_and_train_config(tuning_run_id: str, runs_dir=None) -> tuple[ModelConfig, TrainConfig, str]:
    """Returns the best configuration a tuning run found, ready for cross-validation.

    Works on completed runs and on stopped or interrupted ones with a finished trial.
    The training config has the trial's epochs and the default early-stopping patience.

    Args:
        tuning_run_id: The tuning run's id.
        runs_dir: The run store folder.

    Returns:
        (ModelConfig, TrainConfig, tuning_run_id).

    Raises:
        ValueError: The run is not a tuning run or has no finished trial yet.
    """
    run, config, rows = load_tuning_results(tuning_run_id, runs_dir)
    best = best_row(rows, config.direction)
    _require(best is not None, f"Tuning run {tuning_run_id} has no finished trial yet; wait for one or resume it.")
    model, train = configs_for_values(config, best["hyperparameters"], best["epochs"])
    train = dataclasses.replace(train, early_stopping_patience=TrainConfig().early_stopping_patience)
    return model, train, run.id


def cv_config_from_tuning(
    tuning_run_id: str,
    *,
    n_splits: int = 5,
    epochs: int | None = None,
    random_state: int | None = None,
    run_name: str = "",
    runs_dir=None,
):
    """Returns the RunConfig that cross-validates a tuning run's best configuration.

    The data folder, label mode and image size are the tuning run's; the RunConfig
    records the tuning run in source_tuning_run.

    Args:
        tuning_run_id: The tuning run's id.
        n_splits: Folds k.
        epochs: Epochs per fold (default: those of the best trial).
        random_state: Seed (default: the tuning run's).
        run_name: A readable name (default: "best of <tuning run>").
        runs_dir: The run store folder.

    Returns:
        A validated RunConfig.
    """
    from zoidberg.config import RunConfig

    model, train, source = best_model_and_train_config(tuning_run_id, runs_dir)
    _, config, _ = load_tuning_results(tuning_run_id, runs_dir)
    if epochs is not None:
        train = dataclasses.replace(train, epochs=int(epochs))
    return RunConfig(
        data=config.data,
        model=model,
        train=train,
        n_splits=n_splits,
        random_state=config.seed if random_state is None else random_state,
        run_name=run_name or f"best of {source}"[:80],
        source_tuning_run=source,
    )


def tune_payload(config: TuneConfig, dataset=None) -> dict:
    """Returns the JSON saved as a tuning run's config.json: the data's fingerprint and package versions too.

    Args:
        config: The tuning configuration.
        dataset: The loaded Dataset, whose fingerprint is recorded; without it the file
            list is scanned (no decoding).
    """
    from zoidberg.cv import package_versions
    from zoidberg.data import fingerprint_records, scan_dataset

    fingerprint = dataset.fingerprint if dataset is not None else fingerprint_records(scan_dataset(config.data.data_dir))
    versions = {**package_versions(), "keras-tuner": importlib.metadata.version("keras-tuner")}
    return {**config.to_dict(), "data_fingerprint": fingerprint, "versions": versions}


def prepare_tuning(config: TuneConfig) -> dict:
    """Checks a tuning configuration against its weights and data, then returns its payload.

    Refuses what would fail before a run folder or a worker exists.

    Raises:
        ValueError: With what to change.
        FileNotFoundError: Pretrained weights were asked for and no local file has them.
    """
    from zoidberg.data import load_dataset

    dataset = load_dataset(config.data.data_dir, label_mode=config.data.label_mode, image_size=config.data.image_size)
    check_tune_config(config, dataset)
    return tune_payload(config, dataset)
