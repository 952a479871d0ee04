"""Command-line flags generated from the registry, shared parsing helpers and output formatting."""

from __future__ import annotations

import argparse
import dataclasses

from zoidberg.config import LABEL_MODES, PROBABILITY_SCALES, THRESHOLD_METHODS, ModelConfig, OperatingPointChoice
from zoidberg.options.registry import PREPROCESSING_OPTIONS, TRAINING_OPTIONS, HyperParameter

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""

def parse_bool(text: str) -> bool:
    """Reads true/false, yes/no, on/off or 1/0."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")

def parse_weights(text: str) -> str | None:
    """Reads --weights: "none" (or nothing) for no weights, else "imagenet" or a file path."""
    return None if text.lower() in ("none", "") else text


_CONVERTERS = {bool: parse_bool, int: int, float: float}


def add_flag(parser: argparse.ArgumentParser, flag: str, dest: str, default, help_text: str, *, choices=None, converter=None, metavar=None) -> None:
    """Adds one option; a boolean one works as `--flag`, `--flag true` and `--flag false`.

    Args:
        parser: The (sub)command's parser.
        flag: The flag, e.g. "--learning-rate".
        dest: The attribute it sets.
        default: Its default (None lets a command tell "not given" apart).
        help_text: One sentence; the default is appended.
        choices: The allowed values, if any.
        converter: Text to value (default: from the default's type).
        metavar: The value's name in --help (default: argparse's).
    """
    shown = f"{help_text} [default: {default}]"
    if isinstance(default, bool) or converter is parse_bool:
        parser.add_argument(flag, dest=dest, type=parse_bool, nargs="?", const=True, default=default, metavar="BOOL", help=shown)
        return
    converter = converter or _CONVERTERS.get(type(default), str)
    parser.add_argument(flag, dest=dest, type=converter, choices=choices, default=default, metavar=metavar, help=shown)

def add_option(parser: argparse.ArgumentParser, option: HyperParameter, *, default=None, help_text: str = "") -> None:
    """Adds the flag of one registry option (a training option or a hyperparameter).

    Args:
        parser: The (sub)command's parser.
        option: The registry entry: its flag, kind, choices, default and help.
        default: Overrides the entry's default (e.g. None to detect "not given").
        help_text: Overrides the entry's help.
    """
    value = option.default if default is None else default
    converter = {"int": int, "float": float, "bool": parse_bool}.get(option.kind)
    choices = list(option.choices) if option.kind == "choice" else None
    metavar = None if choices else option.short_name.upper()
    add_flag(parser, option.cli_flag, option.name, value, help_text or option.help, choices=choices, converter=converter, metavar=metavar)

def _model_option_help() -> dict[str, str]:
    """Help texts of model hyperparameters, read from the architecture registry."""
    from zoidberg.options.registry import ARCHITECTURES

    helps: dict[str, str] = {}
    for spec in ARCHITECTURES.values():
        for parameter in spec.hyperparameters:
            users = helps.get(parameter.name, "")
            helps[parameter.name] = users or f"{parameter.help} (used by: "
    for name in helps:
        archs = [spec.name for spec in ARCHITECTURES.values() if any(p.name == name for p in spec.hyperparameters)]
        helps[name] += ", ".join(archs) + ")"
    return helps

def add_data_options(parser: argparse.ArgumentParser, *, with_size: bool = True) -> None:
    """Adds --data, --label-mode and --image-size."""
    parser.add_argument("--data", required=True, help="Dataset folder: Kaggle layout <root>/{train,val,test}/{NORMAL,PNEUMONIA} or flat <root>/{NORMAL,PNEUMONIA}.")
    parser.add_argument("--label-mode", choices=LABEL_MODES, default="binary", help="binary: normal vs pneumonia; three-class: normal / bacterial / viral from file names.")
    if with_size:
        parser.add_argument("--image-size", type=int, default=128, help="Square grayscale input size in pixels (default 128).")
        for option in PREPROCESSING_OPTIONS:
            add_option(parser, option)


def preprocessing_from_args(args) -> dict:
    """{resize, enhance} of the --resize and --enhance flags."""
    return {option.name: getattr(args, option.name) for option in PREPROCESSING_OPTIONS}

def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Adds --arch and one option per ModelConfig hyperparameter."""
    from zoidberg.options.registry import ARCHITECTURES

    parser.add_argument("--arch", choices=list(ARCHITECTURES), default="cnn", help="Architecture from the registry.")
    helps = _model_option_help()
    # One flag per ModelConfig field: the architectures share fields (dropout_rate), and
    # the help says which architectures use each.
    for field in dataclasses.fields(ModelConfig):
        if field.name == "architecture":
            continue
        converter = parse_weights if field.name == "weights" else None
        flag = "--" + field.name.replace("_", "-")
        add_flag(parser, flag, field.name, field.default, helps.get(field.name, field.name.replace("_", " ")), converter=converter)

def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per training option of the registry (TRAINING_OPTIONS)."""
    for option in TRAINING_OPTIONS:
        add_option(parser, option)

def add_runs_dir(parser: argparse.ArgumentParser) -> None:
    """Adds --runs-dir to a subcommand (the top-level option works too)."""
    parser.add_argument("--runs-dir", default=argparse.SUPPRESS, help="Run store folder [default: $ZOIDBERG_RUNS_DIR or ./runs].")

def add_operating_point_options(parser: argparse.ArgumentParser) -> None:
    """Adds --threshold-method, --target-sensitivity, --target-specificity, --cost-ratio, --prevalence, --probabilities."""
    parser.add_argument(
        "--threshold-method", choices=THRESHOLD_METHODS, default=None,
        help="How the decision threshold is chosen on the out-of-fold predictions [default: youden; "
        "target-sensitivity when --target-sensitivity is given, and so on].",
    )
    parser.add_argument("--target-sensitivity", type=float, default=None, metavar="S", help="Reach this sensitivity (e.g. 0.95), then the best specificity.")
    parser.add_argument("--target-specificity", type=float, default=None, metavar="S", help="Reach this specificity (e.g. 0.9), then the best sensitivity.")
    parser.add_argument("--cost-ratio", type=float, default=1.0, metavar="R", help="Cost method: how many false alarms one missed pneumonia is worth [default: 1].")
    parser.add_argument("--prevalence", type=float, default=None, metavar="P", help="Expected share of pneumonia where the model is used (e.g. 0.3), for PPV, NPV and the cost method [default: the training data's].")
    parser.add_argument("--probabilities", choices=PROBABILITY_SCALES, default="raw", help="Threshold raw model outputs or calibrated ones [default: raw].")

def choice_from_args(args: argparse.Namespace) -> OperatingPointChoice:
    """Builds the validated operating point of the --threshold-method options."""
    method = args.threshold_method
    if method is None:
        method = "target-sensitivity" if args.target_sensitivity is not None else "target-specificity" if args.target_specificity is not None else "youden"
    target = args.target_sensitivity if method == "target-sensitivity" else args.target_specificity if method == "target-specificity" else None
    if method.startswith("target-") and target is None:
        target = 0.95
    return OperatingPointChoice(method, target=target, cost_ratio=args.cost_ratio, prevalence=args.prevalence, probabilities=args.probabilities)

def fmt(value) -> str:
    """A metric with three decimals, or n/a."""
    return "n/a" if value is None else f"{value:.3f}"

def fmt4(value) -> str:
    """A metric with four decimals, or n/a."""
    return "n/a" if value is None else f"{value:.4f}"

def short(value) -> str:
    """A hyperparameter value, short."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "none" if value is None else str(value)
