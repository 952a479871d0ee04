"""Tuning configuration: the algorithm, objective and budget of a search, checked against its data.

The keras-tuner machinery (hypermodel, tuners, the worker's search loop) lives in
zoidberg.tuning.search, imported only when a search runs, so that this module, the CLI
parser and the dashboard's forms load without TensorFlow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from zoidberg.config import RUN_NAME_PATTERN, RUN_NAME_RULE, DataConfig, ModelConfig, TrainConfig, check_engine_choice, require
from zoidberg.options.registry import ARCHITECTURES, training_option
from zoidberg.tuning.space import Dimension, grid_size, resolve_search_space
from zoidberg.tuning.split import tuning_split

ALGORITHMS = ("random", "bayesian", "hyperband", "grid")
# Where trials train: one after another in the worker's process, or as Ray tasks (several at once).
TUNE_ENGINES = ("inprocess", "ray")
TUNE_ENGINE_HELP = (
    "inprocess: trials one after another in the worker's process; ray: each trial a Ray task, `parallel` at once, "
    "on a private local Ray or the cluster at --ray-address, with keras-tuner's oracle in the worker (needs requirements-ray.txt)."
)
ALGORITHM_LABELS = {
    "random": "Random search",
    "bayesian": "Bayesian optimization (Gaussian process)",
    "hyperband": "Hyperband (successive halving of epochs)",
    "grid": "Grid search (every combination; small spaces only)",
}
# Objective name -> direction; all are measured on the patient-grouped validation part.
OBJECTIVES = {"val_auc": "max", "val_accuracy": "max", "val_loss": "min"}
OBJECTIVE_LABELS = {"val_auc": "validation AUC", "val_accuracy": "validation accuracy", "val_loss": "validation loss"}

# A grid larger than this is refused: grid search would never get past the first values.
MAX_GRID_POINTS = 1000
# The training options that a search holds fixed for every trial, as TuneConfig fields.
FIXED_TRAINING_OPTIONS = ("optimizer", "class_weighting")


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
        engine: Where trials train (TUNE_ENGINES).
        parallel: Trials at once with engine ray (a count or "auto").
        ray_address: The Ray cluster to join, or None for a private local Ray.
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
    optimizer: str = training_option("optimizer").default
    class_weighting: str = training_option("class_weighting").default
    run_name: str = ""
    engine: str = "inprocess"
    parallel: int | str = 1
    ray_address: str | None = None

    def __post_init__(self):
        require(
            self.algorithm in ALGORITHMS,
            f"algorithm must be one of {', '.join(ALGORITHMS)}, not {self.algorithm!r}.",
        )
        require(
            self.objective in OBJECTIVES,
            f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}.",
        )
        require(
            isinstance(self.max_trials, int) and 1 <= self.max_trials <= 1000,
            f"max_trials must be a whole number from 1 to 1000, not {self.max_trials!r}.",
        )
        require(
            isinstance(self.epochs_per_trial, int) and 1 <= self.epochs_per_trial <= 1000,
            f"epochs per trial must be a whole number from 1 to 1000, not {self.epochs_per_trial!r}.",
        )
        require(
            isinstance(self.seed, int) and 0 <= self.seed < 2**31,
            f"seed must be a whole number from 0 to 2147483647, not {self.seed!r}.",
        )
        require(
            0.05 <= self.validation_fraction <= 0.5,
            f"validation_fraction must be from 0.05 to 0.5, not {self.validation_fraction!r}.",
        )
        for name in FIXED_TRAINING_OPTIONS:
            training_option(name).check(getattr(self, name))
        require(bool(RUN_NAME_PATTERN.match(self.run_name)), RUN_NAME_RULE)
        check_engine_choice(self.engine, self.parallel, self.ray_address, TUNE_ENGINES, unit="trials")
        spec = ARCHITECTURES.get(self.architecture)
        require(
            spec is not None,
            f"Unknown architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}.",
        )
        require(
            self.data.image_size >= spec.min_image_size,
            f"{spec.label} needs images of at least {spec.min_image_size} px; raise image size from {self.data.image_size}.",
        )
        dimensions = self.dimensions()
        # The fixed values must make a valid configuration together (e.g. a transfer mode
        # that needs weights with weights fixed at none); each value alone was checked.
        configs_for_values(self, {})
        if self.algorithm == "grid":
            points = grid_size(dimensions)
            require(
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
    fixed = {name: getattr(config, name) for name in FIXED_TRAINING_OPTIONS}
    train = TrainConfig(epochs=int(epochs or config.epochs_per_trial), early_stopping_patience=0, **fixed, **train_values)
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
    from zoidberg.models.build import check_model_config

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
            require(
                not missing,
                f"The patient-grouped {label} part has no {', '.join(missing)} images; "
                "use more data or change the validation fraction.",
            )


def tune_payload(config: TuneConfig, dataset=None) -> dict:
    """Returns the JSON saved as a tuning run's config.json: the data's fingerprint and package versions too.

    Args:
        config: The tuning configuration.
        dataset: The loaded Dataset, whose fingerprint is recorded; without it the file
            list is scanned (no decoding).
    """
    from zoidberg.data.dataset import fingerprint_records, scan_dataset
    from zoidberg.versions import package_versions

    fingerprint = dataset.fingerprint if dataset is not None else fingerprint_records(scan_dataset(config.data.data_dir))
    versions = package_versions(extra=("keras-tuner",))
    return {**config.to_dict(), "data_fingerprint": fingerprint, "versions": versions}


def prepare_tuning(config: TuneConfig, dataset=None) -> dict:
    """Checks a tuning configuration against its weights and data, then returns its payload.

    Refuses what would fail before a run folder or a worker exists.

    Args:
        config: The tuning configuration.
        dataset: The loaded dataset when the caller already has it (the dashboard's cache);
            else it is loaded here.

    Raises:
        ValueError: With what to change.
        FileNotFoundError: Pretrained weights were asked for and no local file has them.
    """
    from zoidberg.data.dataset import load_dataset

    if config.engine == "ray":
        from zoidberg.training.ray_engine import import_ray

        import_ray()
    if dataset is None:
        dataset = load_dataset(config.data.data_dir, **config.data.loader_options())
    check_tune_config(config, dataset)
    return tune_payload(config, dataset)
