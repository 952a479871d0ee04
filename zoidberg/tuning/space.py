"""Search spaces: every hyperparameter of an architecture and of its training, tuned or fixed, fitted to the image size."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from zoidberg.config import ModelConfig, TrainConfig, require
from zoidberg.models.build import check_model_config
from zoidberg.options.registry import ARCHITECTURES, HyperParameter, tunable_training_options

SEARCH_SPACE_KEYS = ("min_value", "max_value", "step", "choices", "log")
# keras-tuner's Choice cannot hold None, so None travels through it as this text.
NONE_CHOICE = "none"
# Hyperband and keras-tuner bookkeeping values in a trial's hyperparameters.
TUNER_VALUE_PREFIX = "tuner/"


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
            return f"fixed at {format_value(self.value)}"
        if self.is_range:
            scale = " (log scale)" if self.log else ""
            return f"{format_value(self.min_value)} … {format_value(self.max_value)}{scale}"
        return ", ".join(format_value(choice) for choice in self.choices)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict."""
        return dataclasses.asdict(self)


def format_value(value: Any) -> str:
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
    require(
        architecture in ARCHITECTURES,
        f"Unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}.",
    )
    model = tuple((parameter, "model") for parameter in ARCHITECTURES[architecture].hyperparameters if parameter.tunable)
    return model + tuple((option, "train") for option in tunable_training_options())


def _coerce(parameter: HyperParameter, value: Any, what: str) -> Any:
    """Converts a user's value to the field's type, or raises ValueError naming it."""
    if value is None or isinstance(parameter.default, str) or parameter.default is None:
        return value
    if isinstance(parameter.default, bool):
        require(isinstance(value, bool), f"{what} must be true or false, not {value!r}.")
        return value
    require(
        isinstance(value, (int, float)) and not isinstance(value, bool),
        f"{what} must be a number, not {value!r}.",
    )
    if isinstance(parameter.default, int):
        require(float(value).is_integer(), f"{what} must be a whole number, not {value!r}.")
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


def _dimension_kind(parameter: HyperParameter) -> str:
    """Returns the kind of a hyperparameter's dimension: a default search over listed values is a choice."""
    return "choice" if "choices" in parameter.search else parameter.kind


def _default_dimension(parameter: HyperParameter, target: str) -> Dimension:
    """Returns the dimension a hyperparameter has when the user overrides nothing.

    The registry entry says whether a default search varies it (`tuned`) and over which
    range or values (`search`, intersected with the valid range).
    """
    narrower = parameter.search
    if parameter.kind == "bool":
        choices = (False, True)
    else:
        choices = tuple(narrower.get("choices", parameter.choices))
    low, high = parameter.min_value, parameter.max_value
    if low is not None and high is not None:
        low = max(low, narrower.get("min_value", low))
        high = min(high, narrower.get("max_value", high))
    return Dimension(
        name=parameter.name,
        kind=_dimension_kind(parameter),
        target=target,
        tuned=parameter.tuned,
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
    require(
        not unknown,
        f"Search space: {name} has unknown key(s) {', '.join(unknown)}; use {', '.join(SEARCH_SPACE_KEYS)}.",
    )
    base = _default_dimension(parameter, target)
    if base.kind in ("bool", "choice"):
        choices = override.get("choices", base.choices)
        require(
            isinstance(choices, (list, tuple)) and len(choices) > 0,
            f"Search space: {name} needs a non-empty list of choices.",
        )
        choices = tuple(_coerce(parameter, choice, f"a choice of {name}") for choice in choices)
        require(len(set(choices)) == len(choices), f"Search space: {name} lists a choice twice.")
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
    require(low is not None and high is not None, f"Search space: {name} needs min_value and max_value.")
    require(low < high, f"Search space: {name} min_value {low:g} must be below max_value {high:g} (or fix {name} instead).")
    require(not log or low > 0, f"Search space: {name} on a log scale needs min_value above 0, not {low:g}.")
    if step is not None:
        step = _coerce(parameter, step, f"step of {name}")
        require(step > (1 if log else 0), f"Search space: step of {name} must be above {'1 (a factor on a log scale)' if log else '0'}, not {step}.")
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
    require(reason is None, f"Search space: even the smallest model cannot be built: {reason}")
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
        require(
            not overridden and dimension.kind == "int",
            f"Search space: {name} up to {format_value(dimension.max_value)} cannot be built at {image_size} px: {reason}",
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
    require(
        not overridden,
        f"Search space: {name} = {format_value(first)} cannot be built at {image_size} px: {failing[first]}",
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
            {name: value} to fix it. Names left out keep the registry's defaults: entries
            marked `tuned` are searched over their `search` range, the rest are fixed at
            their default.
        image_size: Input side in pixels; default ranges are narrowed to what fits.

    Returns:
        One Dimension per hyperparameter the architecture and training use.

    Raises:
        ValueError: Naming the hyperparameter and what to change.
    """
    require(isinstance(search_space, Mapping), "The search space must be a mapping of hyperparameter names.")
    parameters = tunable_hyperparameters(architecture)
    known = [parameter.name for parameter, _ in parameters]
    unknown = sorted(set(search_space) - set(known))
    require(
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

