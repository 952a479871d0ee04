"""Frozen, validated run configuration saved as JSON in every run."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from zoidberg.options.registry import ARCHITECTURES, PREPROCESSING_OPTIONS, TRAINING_OPTIONS, TRANSFER_MODES, preprocessing_option

LABEL_MODES = ("binary", "three-class")
CALIBRATION_METHODS = ("temperature", "platt")
# What `export` writes a run's fold ensemble as (zoidberg.inference.export).
EXPORT_FORMATS = ("keras", "savedmodel", "tflite", "onnx")
DUPLICATE_POLICIES = ("group", "drop", "ignore")
DUPLICATE_POLICY_HELP = (
    "What cross-validation does with exact and near-duplicate images: group puts each set of "
    "duplicates with one patient (so they share a fold), drop keeps one image of each set, "
    "ignore leaves them as the file names say."
)

RUN_NAME_PATTERN = re.compile(r"^[\w .,:+=@()\-]{0,80}$")
RUN_NAME_RULE = "run_name may use letters, digits, spaces and . , : + = @ ( ) - _ (at most 80)."


def require(condition: bool, message: str) -> None:
    """Raises ValueError with `message` (which says what to change) unless `condition` holds.

    Args:
        condition: What must be true.
        message: The user-facing sentence.
    """
    if not condition:
        raise ValueError(message)


THRESHOLD_METHODS = ("youden", "fixed-0.5", "target-sensitivity", "target-specificity", "cost")
THRESHOLD_METHOD_LABELS = {
    "youden": "Youden (sensitivity + specificity highest)",
    "fixed-0.5": "Fixed at 0.5",
    "target-sensitivity": "Target sensitivity (then the best specificity)",
    "target-specificity": "Target specificity (then the best sensitivity)",
    "cost": "Cost ratio of a missed pneumonia to a false alarm",
}
PROBABILITY_SCALES = ("raw", "calibrated")


@dataclass(frozen=True)
class OperatingPointChoice:
    """How a binary run turns probabilities into decisions; validated, saved in the run.

    Attributes:
        method: One of THRESHOLD_METHODS.
        target: The sensitivity or specificity to reach (target methods), e.g. 0.95.
        cost_ratio: How many false alarms one missed pneumonia is worth (cost method).
        prevalence: The expected share of pneumonia where the model is used, for PPV, NPV
            and the cost method; None means the share in the training data.
        probabilities: "raw" model outputs or "calibrated" ones (the run's calibration).
    """

    method: str = "youden"
    target: float | None = None
    cost_ratio: float = 1.0
    prevalence: float | None = None
    probabilities: str = "raw"

    def __post_init__(self):
        if self.method not in THRESHOLD_METHODS:
            raise ValueError(f"threshold method must be one of {', '.join(THRESHOLD_METHODS)}, not {self.method!r}.")
        if self.method.startswith("target-"):
            what = self.method.removeprefix("target-")
            if self.target is None or not 0.5 <= self.target < 1.0:
                raise ValueError(f"The {what} target must be from 0.5 to below 1 (e.g. 0.95), not {self.target!r}.")
        if not (isinstance(self.cost_ratio, (int, float)) and 0.01 <= self.cost_ratio <= 100):
            raise ValueError(f"cost_ratio must be from 0.01 to 100 (missed pneumonia : false alarm), not {self.cost_ratio!r}.")
        if self.prevalence is not None and not 0.01 <= self.prevalence <= 0.99:
            raise ValueError(f"prevalence must be from 0.01 to 0.99 (e.g. 0.3 for 30 %), not {self.prevalence!r}.")
        if self.probabilities not in PROBABILITY_SCALES:
            raise ValueError(f"probabilities must be raw or calibrated, not {self.probabilities!r}.")

    def describe(self) -> str:
        """One phrase for captions and reports, e.g. "target sensitivity 95 %"."""
        if self.method.startswith("target-"):
            return f"{self.method.removeprefix('target-')} ≥ {self.target:.0%}"
        if self.method == "cost":
            return f"cost ratio {self.cost_ratio:g} : 1 (missed pneumonia : false alarm)"
        return {"youden": "Youden", "fixed-0.5": "fixed 0.5"}[self.method]

    def to_dict(self) -> dict:
        """Returns the JSON stored in the run."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> OperatingPointChoice:
        """Builds a validated choice from stored JSON, ignoring unknown keys."""
        names = ("method", "target", "cost_ratio", "prevalence", "probabilities")
        return cls(**{name: payload[name] for name in names if name in payload})



@dataclass(frozen=True)
class DataConfig:
    """Which images to read and how to label and size them.

    Attributes:
        data_dir: Dataset root in the Kaggle or flat layout.
        label_mode: "binary" (normal vs pneumonia) or "three-class"
            (normal / bacterial / viral, from file names).
        image_size: Side of the square grayscale input, in pixels.
        resize: How images become squares (the registry's PREPROCESSING_OPTIONS).
        enhance: The contrast enhancement applied after resizing.
    """

    data_dir: str
    label_mode: str = "binary"
    image_size: int = 128
    resize: str = preprocessing_option("resize").default
    enhance: str = preprocessing_option("enhance").default

    def __post_init__(self):
        require(bool(str(self.data_dir).strip()), "Choose a data folder: data_dir is empty.")
        require(
            self.label_mode in LABEL_MODES,
            f"label_mode must be one of {', '.join(LABEL_MODES)}, not {self.label_mode!r}.",
        )
        require(
            isinstance(self.image_size, int) and 16 <= self.image_size <= 512,
            f"image_size must be a whole number of pixels from 16 to 512, not {self.image_size!r}.",
        )
        for option in PREPROCESSING_OPTIONS:
            option.check(getattr(self, option.name))

    def loader_options(self) -> dict:
        """The keyword arguments of zoidberg.data.dataset.load_dataset for this data (all but the folder)."""
        return {"label_mode": self.label_mode, "image_size": self.image_size, "resize": self.resize, "enhance": self.enhance}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and its hyperparameters.

    Only the fields that the chosen architecture lists in its registry entry are used;
    the others keep their defaults so that every run's JSON has the same shape.
    """

    architecture: str = "cnn"
    # Custom CNN.
    conv_blocks: int = 3
    base_filters: int = 32
    kernel_size: int = 3
    dense_units: int = 128
    dropout_rate: float = 0.3
    batch_norm: bool = False
    # Pretrained backbones.
    alpha: float = 1.0
    weights: str | None = None
    transfer_mode: str = "end-to-end"
    fine_tune_layers: int = 20

    def __post_init__(self):
        require(
            self.architecture in ARCHITECTURES,
            f"Unknown architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}.",
        )
        require(1 <= self.conv_blocks <= 6, f"conv_blocks must be 1 to 6, not {self.conv_blocks}.")
        require(4 <= self.base_filters <= 256, f"base_filters must be 4 to 256, not {self.base_filters}.")
        require(self.kernel_size in (3, 5, 7), f"kernel_size must be 3, 5 or 7, not {self.kernel_size}.")
        require(1 <= self.dense_units <= 2048, f"dense_units must be 1 to 2048, not {self.dense_units}.")
        require(
            0.0 <= self.dropout_rate < 1.0,
            f"dropout_rate must be at least 0 and below 1, not {self.dropout_rate}.",
        )
        require(0.05 <= self.alpha <= 1.4, f"alpha must be between 0.05 and 1.4, not {self.alpha}.")
        require(
            self.transfer_mode in TRANSFER_MODES,
            f"transfer_mode must be one of {', '.join(TRANSFER_MODES)}, not {self.transfer_mode!r}.",
        )
        require(self.fine_tune_layers >= 0, "fine_tune_layers must be 0 or more.")
        if self.transfer_mode != "end-to-end":
            require(
                self.weights not in (None, ""),
                f"transfer_mode {self.transfer_mode!r} needs pretrained weights: "
                "set weights to 'imagenet' or to a local .h5 file.",
            )
            require(
                ARCHITECTURES[self.architecture].pretrained_capable,
                f"{self.architecture} has no pretrained weights; use transfer_mode 'end-to-end'.",
            )


class _TrainConfigChecks:
    """How each fold's model is trained: one field per entry of the registry's TRAINING_OPTIONS.

    TrainConfig is generated from that table (below), so a new training option is declared
    once, in zoidberg.options.registry, and validated, saved, shown and searched from there.
    """

    def __post_init__(self):
        for option in TRAINING_OPTIONS:
            option.check(getattr(self, option.name))


_PYTHON_TYPES = {"int": int, "float": float, "bool": bool, "choice": str}

TrainConfig = dataclasses.make_dataclass(
    "TrainConfig",
    [(option.name, _PYTHON_TYPES[option.kind], field(default=option.default)) for option in TRAINING_OPTIONS],
    bases=(_TrainConfigChecks,),
    frozen=True,
)
TrainConfig.__module__ = __name__
TrainConfig.__doc__ = _TrainConfigChecks.__doc__


# Where folds train: auto (in the worker's process for tiny runs, else local), local (each fold in a
# fresh child process, `parallel` at a time), inprocess (one after another in the worker's process).
ENGINES = ("auto", "local", "inprocess", "ray")
ENGINE_HELP = (
    "auto: in the worker's own process for tiny runs (a TensorFlow import per fold would cost more than the fold), "
    "else local; local: each fold in a fresh child process, which returns TensorFlow's memory after every fold; "
    "inprocess: every fold in the worker's process, one after another; ray: each fold a Ray task, on a private "
    "local Ray or on the cluster at --ray-address (needs requirements-ray.txt)."
)
RAY_ADDRESS_RULE = "ray_address must be auto, HOST:PORT or ray://HOST:PORT (or empty for a private local Ray)"
RAY_ADDRESS_PATTERN = re.compile(r"^(auto|local|ray://[\w.\-]+(:\d+)?|[\w.\-]+:\d+)$")


def check_engine_choice(engine: str, parallel: int | str, ray_address: str | None, engines: tuple, *, unit: str) -> None:
    """Checks where a run's folds (or trials) train, how many at once, and a Ray cluster's address.

    Raises:
        ValueError: With what to change.
    """
    require(engine in engines, f"engine must be one of {', '.join(engines)}, not {engine!r}.")
    require(
        parallel == "auto" or (isinstance(parallel, int) and not isinstance(parallel, bool) and 1 <= parallel <= 64),
        f"parallel ({unit} at once) must be auto or from 1 to 64, not {parallel!r}.",
    )
    require(
        parallel in (1, "auto") or engine != "inprocess",
        f"With engine inprocess the {unit} train one after another in the worker's process: choose another engine to train several at once.",
    )
    require(
        ray_address is None or (isinstance(ray_address, str) and bool(RAY_ADDRESS_PATTERN.match(ray_address))),
        f"{RAY_ADDRESS_RULE}, not {ray_address!r}.",
    )
    require(
        ray_address is None or engine == "ray",
        f"A Ray address ({ray_address}) needs engine ray: choose it, or leave the address empty.",
    )


MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class RunConfig:
    """Everything one cross-validation run needs, saved as config.json."""

    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    n_splits: int = 5
    random_state: int = 42
    operating_point: OperatingPointChoice = field(default_factory=OperatingPointChoice)
    calibration_method: str = "temperature"
    duplicates: str = "group"
    tta: bool = False
    tensorboard: bool = True
    mlflow_uri: str | None = None
    engine: str = "auto"
    parallel: int | str = 1
    precision: str = "auto"
    ray_address: str | None = None
    preset: str | None = None
    run_name: str = ""
    source_tuning_run: str | None = None

    def __post_init__(self):
        require(
            isinstance(self.n_splits, int) and 2 <= self.n_splits <= 20,
            f"k (n_splits) must be from 2 to 20, not {self.n_splits!r}.",
        )
        # NumPy and Keras seed with an unsigned 32-bit number: checked here, before a run exists.
        require(
            isinstance(self.random_state, int) and not isinstance(self.random_state, bool) and 0 <= self.random_state <= MAX_SEED,
            f"seed must be a whole number from 0 to {MAX_SEED}, not {self.random_state!r}.",
        )
        require(
            self.calibration_method in CALIBRATION_METHODS,
            f"calibration_method must be one of {', '.join(CALIBRATION_METHODS)}, not {self.calibration_method!r}.",
        )
        require(
            self.duplicates in DUPLICATE_POLICIES,
            f"duplicates must be one of {', '.join(DUPLICATE_POLICIES)}, not {self.duplicates!r}.",
        )
        require(isinstance(self.tta, bool), f"tta must be true or false, not {self.tta!r}.")
        require(isinstance(self.tensorboard, bool), f"tensorboard must be true or false, not {self.tensorboard!r}.")
        require(self.precision in ("auto", "float32", "mixed"), f"precision must be auto, float32 or mixed, not {self.precision!r}.")
        check_engine_choice(self.engine, self.parallel, self.ray_address, ENGINES, unit="folds")
        require(
            self.mlflow_uri is None or (isinstance(self.mlflow_uri, str) and self.mlflow_uri.strip() != ""),
            f"mlflow_uri must be a tracking URI (file:///path, http://host:5000, databricks) or empty, not {self.mlflow_uri!r}.",
        )
        require(
            bool(RUN_NAME_PATTERN.match(self.run_name)),
            RUN_NAME_RULE,
        )
        spec = ARCHITECTURES[self.model.architecture]
        require(
            self.data.image_size >= spec.min_image_size,
            f"{spec.label} needs images of at least {spec.min_image_size} px; "
            f"raise image size from {self.data.image_size}.",
        )
        require(
            self.model.transfer_mode != "fine-tune" or self.train.epochs >= 2,
            "Fine-tune mode needs at least 2 epochs: the first half trains the head, the second the top "
            f"backbone layers. Raise epochs from {self.train.epochs}, or use frozen mode.",
        )

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> "RunConfig":
        """Builds a validated config from a dict, ignoring unknown keys.

        Runs made before operating points existed stored only a threshold_method ("youden"
        or "fixed-0.5"); it becomes their operating point, and their duplicates policy is
        "ignore", which is what they did.
        """
        payload = dict(payload)
        choice = payload.get("operating_point") or {"method": payload.get("threshold_method", "youden")}
        if "operating_point" not in payload:
            payload.setdefault("duplicates", "ignore")
        return cls(
            data=from_mapping(DataConfig, payload.get("data", {})),
            model=from_mapping(ModelConfig, payload.get("model", {})),
            train=from_mapping(TrainConfig, payload.get("train", {})),
            operating_point=OperatingPointChoice.from_dict(choice),
            **{
                key: payload[key]
                for key in _PLAIN_RUN_FIELDS
                if key in payload
            },
        )


# RunConfig's fields stored as plain values (every one but the nested configs), read back as they are.
_PLAIN_RUN_FIELDS = tuple(field.name for field in dataclasses.fields(RunConfig) if field.name not in ("data", "model", "train", "operating_point"))

ENSEMBLE_METHODS = ("mean", "stacking")
ENSEMBLE_METHOD_HELP = (
    "mean: the average of the members' probabilities; stacking: a logistic regression on the members' "
    "out-of-fold probabilities (binary runs), which weighs the better member more."
)


@dataclass(frozen=True)
class EnsembleConfig:
    """An ensemble of cross-validation runs, saved as config.json of an "ensemble" run.

    Attributes:
        members: Ids of finished runs that join as they are.
        recipes: Runs to train first, one after another in the ensemble's worker, then join
            (a preset such as "best" is an ensemble of recipes).
        method: One of ENSEMBLE_METHODS.
        operating_point: How the threshold is chosen on the members' combined out-of-fold predictions.
        calibration_method: Fitted on the same combined out-of-fold predictions.
        preset: The preset it was made from, if any.
        run_name: Optional name.
    """

    members: tuple[str, ...] = ()
    recipes: tuple[RunConfig, ...] = ()
    method: str = "mean"
    operating_point: OperatingPointChoice = field(default_factory=OperatingPointChoice)
    calibration_method: str = "temperature"
    preset: str | None = None
    run_name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "members", tuple(str(member) for member in self.members))
        object.__setattr__(self, "recipes", tuple(self.recipes))
        count = len(self.members) + len(self.recipes)
        require(count >= 2, f"An ensemble needs at least two runs, not {count}.")
        require(len(set(self.members)) == len(self.members), "Each run can join an ensemble once: remove the repeated run.")
        require(self.method in ENSEMBLE_METHODS, f"method must be one of {', '.join(ENSEMBLE_METHODS)}, not {self.method!r}.")
        require(
            self.calibration_method in CALIBRATION_METHODS,
            f"calibration_method must be one of {', '.join(CALIBRATION_METHODS)}, not {self.calibration_method!r}.",
        )
        folders = {recipe.data.data_dir for recipe in self.recipes}
        require(len(folders) <= 1, "Every run an ensemble trains must use one data folder.")
        require(bool(RUN_NAME_PATTERN.match(self.run_name)), RUN_NAME_RULE)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict."""
        return {
            "members": list(self.members),
            "recipes": [recipe.to_dict() for recipe in self.recipes],
            "method": self.method,
            "operating_point": self.operating_point.to_dict(),
            "calibration_method": self.calibration_method,
            "preset": self.preset,
            "run_name": self.run_name,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> "EnsembleConfig":
        """Builds a validated config from config.json, ignoring unknown keys."""
        return cls(
            members=tuple(payload.get("members") or ()),
            recipes=tuple(RunConfig.from_dict(recipe) for recipe in payload.get("recipes") or ()),
            operating_point=OperatingPointChoice.from_dict(payload.get("operating_point") or {}),
            **{key: payload[key] for key in ("method", "calibration_method", "preset", "run_name") if key in payload},
        )


def from_mapping(cls, payload: Mapping[str, Any]):
    """Builds dataclass `cls` from the keys of `payload` that it knows."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in dict(payload).items() if key in names})


def replace_fields(config, **changes):
    """Returns a copy of a frozen config with `changes`, validated again."""
    return dataclasses.replace(config, **changes)


def make_data_config(data_dir: str, label_mode: str = "binary", image_size: int = 128, **preprocessing) -> DataConfig:
    """Builds a DataConfig with the folder as an absolute path (as the CLI and both forms do).

    Args:
        data_dir: The folder as typed; a blank one stays blank so that validation says so.
        label_mode: "binary" or "three-class".
        image_size: Side of the square grayscale input.
        **preprocessing: resize and enhance (the registry's PREPROCESSING_OPTIONS).

    Returns:
        The validated DataConfig.
    """
    from pathlib import Path

    folder = str(Path(str(data_dir).strip()).expanduser().resolve()) if str(data_dir).strip() else ""
    return DataConfig(data_dir=folder, label_mode=label_mode, image_size=image_size, **preprocessing)


def make_run_config(
    data: DataConfig, architecture: str, model_values: Mapping[str, Any], train_values: Mapping[str, Any], **fields
) -> RunConfig:
    """Builds a validated RunConfig from a form's values.

    Args:
        data: Which images.
        architecture: Registry key.
        model_values: {ModelConfig field: value} of the architecture's hyperparameters.
        train_values: {TrainConfig field: value}.
        **fields: The other RunConfig fields (n_splits, random_state, run_name, ...).

    Returns:
        The RunConfig.

    Raises:
        ValueError: With what to change (the config classes' own messages).
    """
    try:
        return RunConfig(
            data=data,
            model=ModelConfig(architecture=architecture, **model_values),
            train=TrainConfig(**train_values),
            **fields,
        )
    except TypeError as error:
        # A registry field that the config lacks is a programming error, but the user
        # still deserves a sentence rather than a traceback.
        raise ValueError(f"Invalid configuration: {error}") from None
