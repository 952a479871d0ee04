"""From the training commands' flags to validated configs: a preset's values as defaults, cv, ensemble and tune configs, engine flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from zoidberg.cli.options import CliError, choice_from_args, preprocessing_from_args
from zoidberg.config import EnsembleConfig, ModelConfig, RunConfig, TrainConfig, make_data_config
from zoidberg.models.presets import get_preset
from zoidberg.options.registry import TRAINING_OPTIONS

# The cv flags' destinations whose names differ from the configuration fields they set.
FLAG_DESTINATIONS = {"architecture": "arch", "n_splits": "folds", "random_state": "seed"}


def with_preset(parser: argparse.ArgumentParser, args: argparse.Namespace, argv) -> argparse.Namespace:
    """Parses `cv` again with its preset's values as the defaults, so that every flag given still wins.

    Raises:
        CliError: --preset with --from-tuning (both would choose the hyperparameters).
    """
    if args.from_tuning:
        raise CliError("Choose either --preset or --from-tuning: both set the architecture and its hyperparameters.")
    preset = get_preset(args.preset)
    if preset.is_ensemble:
        changed = [dest for dest in _member_destinations() if getattr(args, dest) != args.subparser.get_default(dest)]
        if changed:
            flags = ", ".join("--" + dest.replace("_", "-") for dest in changed)
            raise CliError(
                f"The {preset.name} preset trains the {', '.join(preset.members)} presets and averages them; {flags} cannot "
                f"change all three. Train a member with `cv --preset NAME {flags.split(',')[0]} ...`, then combine runs with `ensemble`."
            )
    args.subparser.set_defaults(**{FLAG_DESTINATIONS.get(name, name): value for name, value in preset.flat_values().items()})
    choice = preset.operating_point
    if choice.get("method") == "target-sensitivity":
        args.subparser.set_defaults(target_sensitivity=choice.get("target"))
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Builds the validated RunConfig of `cv` options.

    With --from-tuning, the architecture, its hyperparameters, the learning rate, batch
    size, augmentation, optimizer and class weighting come from the tuning run's best
    trial, and image size, label mode and epochs default to the tuning run's.
    """
    model_fields = {field.name: getattr(args, field.name) for field in dataclasses.fields(ModelConfig) if field.name != "architecture"}
    model = ModelConfig(architecture=args.arch, **model_fields)
    source = None
    train_values = {option.name: getattr(args, option.name) for option in TRAINING_OPTIONS}
    if train_values["epochs"] is None:
        train_values["epochs"] = TrainConfig().epochs
    train = TrainConfig(**train_values)
    label_mode = args.label_mode or "binary"
    image_size = 128 if args.image_size is None else args.image_size
    if args.from_tuning:
        from zoidberg.tuning.results import best_model_and_train_config, load_tuning_results

        model, tuned_train, source = best_model_and_train_config(args.from_tuning, args.runs_dir)
        tuning = load_tuning_results(args.from_tuning, args.runs_dir)[1]
        epochs = tuned_train.epochs if args.epochs is None else args.epochs
        train = dataclasses.replace(tuned_train, epochs=epochs, early_stopping_patience=args.early_stopping_patience)
        label_mode = args.label_mode or tuning.data.label_mode
        image_size = tuning.data.image_size if args.image_size is None else args.image_size
    return RunConfig(
        data=make_data_config(args.data, label_mode, image_size, **preprocessing_from_args(args)),
        model=model,
        train=train,
        n_splits=args.folds,
        random_state=args.seed,
        operating_point=choice_from_args(args),
        calibration_method=args.calibration_method,
        duplicates=args.duplicates,
        tta=args.tta,
        tensorboard=args.tensorboard,
        mlflow_uri=args.mlflow_uri,
        **engine_from_args(args),
        precision=args.precision,
        preset=args.preset,
        run_name=args.name,
        source_tuning_run=source,
    )


def ensemble_preset_config(args: argparse.Namespace) -> EnsembleConfig:
    """The EnsembleConfig of `cv --preset NAME` for an ensemble preset: its members on --data, with the flags' threshold."""
    import dataclasses as _dataclasses

    from zoidberg.models.presets import make_preset_config

    config = make_preset_config(args.preset, args.data, label_mode=args.label_mode or "binary", run_name=args.name, random_state=args.seed)
    recipes = tuple(_dataclasses.replace(recipe, n_splits=args.folds) if args.folds != args.subparser.get_default("folds") else recipe for recipe in config.recipes)
    return _dataclasses.replace(config, recipes=recipes, operating_point=choice_from_args(args), calibration_method=args.calibration_method)


def _member_destinations() -> list[str]:
    """The cv destinations that configure one run's model, training and images (not the data folder, k or seed)."""
    from zoidberg.options.registry import PREPROCESSING_OPTIONS

    model = [field.name for field in dataclasses.fields(ModelConfig) if field.name != "architecture"]
    return ["arch", "image_size", "tta", *model, *(option.name for option in TRAINING_OPTIONS), *(option.name for option in PREPROCESSING_OPTIONS)]


def tune_config_from_args(args: argparse.Namespace):
    """Builds the validated TuneConfig of `tune` options."""
    from zoidberg.tuning.config import FIXED_TRAINING_OPTIONS, TuneConfig

    return TuneConfig(
        data=make_data_config(args.data, args.label_mode, args.image_size, **preprocessing_from_args(args)),
        architecture=args.arch,
        search_space=_search_space_arg(args.space),
        algorithm=args.algorithm,
        objective=args.objective,
        max_trials=args.max_trials,
        epochs_per_trial=args.epochs,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        **{name: getattr(args, name) for name in FIXED_TRAINING_OPTIONS},
        run_name=args.name,
        **engine_from_args(args, default="inprocess"),
    )


def _search_space_arg(text: str | None) -> dict:
    """Parses --space: inline JSON or @file.json."""
    if not text:
        return {}
    if text.startswith("@"):
        try:
            text = Path(text[1:]).expanduser().read_text(encoding="utf-8")
        except OSError as error:
            raise CliError(f"Cannot read the search space file {text[1:]}: {error.strerror or error}.") from None
    try:
        space = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"--space is not valid JSON: {error}.") from None
    if not isinstance(space, dict):
        raise CliError('--space must be a JSON object such as {"conv_blocks": {"min_value": 1, "max_value": 3}}.')
    return space


def add_engine_options(parser, engines: tuple, default: str, engine_help: str, *, unit: str, auto_help: str) -> None:
    """Adds --engine, --parallel and --ray-address: where a run's folds or trials train, and how many at once."""
    parser.add_argument("--engine", choices=engines, default=default, help=f"Where {unit} train. {engine_help} [default: {default}].")
    parser.add_argument("--parallel", type=parse_parallel, default=1, metavar="N|auto",
                        help=f"{unit.capitalize()} training at once (not with engine inprocess): a number, or auto ({auto_help}) [default: 1].")
    parser.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT|ray://HOST:PORT",
                        help="With --engine ray: the cluster to join (auto: the one `ray start --head` runs on this machine); "
                        "without it a private local Ray starts for the run. Implies --engine ray.")


def engine_from_args(args: argparse.Namespace, default: str = "auto") -> dict:
    """The engine, parallel and ray_address config fields of the flags (an address alone means engine ray)."""
    engine = "ray" if args.ray_address and args.engine == default else args.engine
    return {"engine": engine, "parallel": args.parallel, "ray_address": args.ray_address or None}


def parse_parallel(text: str) -> int | str:
    """--parallel's value: "auto" or a whole number of at least 1."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of folds or auto, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, not {value}")
    return value
