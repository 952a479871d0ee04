"""The form's widget groups, drawn from the option tables: data, architecture, hyperparameters, training, evaluation, engine."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import streamlit as st

from zoidberg.config import (
    CALIBRATION_METHODS,
    DUPLICATE_POLICIES,
    DUPLICATE_POLICY_HELP,
    ENGINE_HELP,
    ENGINES,
    LABEL_MODES,
    PROBABILITY_SCALES,
    THRESHOLD_METHOD_LABELS,
    THRESHOLD_METHODS,
    OperatingPointChoice,
)
from zoidberg.options.registry import ARCHITECTURES, PREPROCESSING_OPTIONS, TRAINING_OPTIONS, ArchitectureSpec, HyperParameter
from zoidberg.ui.widgets import PERSIST, seeded

LABEL_MODE_HELP = (
    "binary: normal vs pneumonia. three-class: normal / bacterial / viral, read from the "
    "file names (personN_bacteria_M, personN_virus_M)."
)

# Integer ranges up to this many steps are drawn as sliders; wider ones as number inputs.
MAX_SLIDER_STEPS = 60


def data_dir_ui(default: str, key: str = "data_dir_input") -> str:
    """Draws the data-folder text input.

    Args:
        default: The folder shown when the user has typed nothing yet.
        key: Widget key.

    Returns:
        The folder path, stripped.
    """
    if key not in st.session_state:
        st.session_state[key] = default
    value = st.text_input(
        "Data folder",
        key=key,
        persist_state=PERSIST,
        help="Kaggle layout <folder>/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg or flat <folder>/{NORMAL,PNEUMONIA}/*.jpeg. "
        "Leave the demo folder to try the app with synthetic images.",
    )
    return str(value).strip()


def label_mode_ui(key: str, default: str = "binary") -> str:
    """Draws the label-mode choice.

    Args:
        key: Widget key.
        default: Initial label mode.

    Returns:
        "binary" or "three-class".
    """
    return st.radio(
        "Label mode",
        LABEL_MODES,
        key=seeded(key, default),
        persist_state=PERSIST,
        horizontal=True,
        help=LABEL_MODE_HELP,
    )


def format_choice(value: Any) -> str:
    """Formats a choice for a selectbox (None reads as "none").

    Args:
        value: A choice value.

    Returns:
        Its display text.
    """
    return "none" if value is None else str(value)


def option_ui(parameter: HyperParameter, key: str) -> Any:
    """Draws one registry option (a hyperparameter or a training option) with the widget its kind calls for.

    Args:
        parameter: The registry's description of the field.
        key: Widget key (unique per architecture and field).

    Returns:
        The chosen value, of the field's type.
    """
    label = parameter.display_label
    if parameter.values:
        return _values_ui(parameter, label, key)
    if parameter.kind == "bool":
        return st.checkbox(label, key=seeded(key, bool(parameter.default)), persist_state=PERSIST, help=parameter.help)
    if parameter.kind == "choice":
        choices = list(parameter.choices)
        return st.selectbox(
            label,
            choices,
            key=seeded(key, parameter.default),
            persist_state=PERSIST,
            help=parameter.help,
            format_func=format_choice,
        )
    if parameter.kind == "int":
        return _int_ui(parameter, label, key)
    return _float_ui(parameter, label, key)


def _values_ui(parameter: HyperParameter, label: str, key: str) -> Any:
    """Draws an option with listed values (batch size, learning rate) as a select slider."""
    values = list(parameter.values)
    if parameter.default not in values:
        values = sorted({*values, parameter.default})
    kind = int if parameter.kind == "int" else float
    return kind(
        st.select_slider(
            label,
            options=values,
            key=seeded(key, parameter.default),
            persist_state=PERSIST,
            format_func=lambda value: f"{value:g}",
            help=parameter.help,
        )
    )


def _int_ui(parameter: HyperParameter, label: str, key: str) -> int:
    """Draws an integer hyperparameter as a slider (narrow range) or number input."""
    step = int(parameter.step or 1)
    low, high = parameter.min_value, parameter.max_value
    if low is not None and high is not None and (high - low) / step <= MAX_SLIDER_STEPS:
        return int(
            st.slider(
                label,
                int(low),
                int(high),
                step=step,
                key=seeded(key, int(parameter.default)),
                persist_state=PERSIST,
                help=parameter.help,
            )
        )
    return int(
        st.number_input(
            label,
            min_value=None if low is None else int(low),
            max_value=None if high is None else int(high),
            step=step,
            key=seeded(key, int(parameter.default)),
            persist_state=PERSIST,
            help=parameter.help,
        )
    )


def _float_ui(parameter: HyperParameter, label: str, key: str) -> float:
    """Draws a float hyperparameter as a slider (with a step) or a free number input."""
    low, high = parameter.min_value, parameter.max_value
    if parameter.step and low is not None and high is not None and not parameter.log:
        return float(
            st.slider(
                label,
                float(low),
                float(high),
                step=float(parameter.step),
                key=seeded(key, float(parameter.default)),
                persist_state=PERSIST,
                help=parameter.help,
            )
        )
    return float(
        st.number_input(
            label,
            min_value=None if low is None else float(low),
            max_value=None if high is None else float(high),
            format="%g",
            key=seeded(key, float(parameter.default)),
            persist_state=PERSIST,
            help=parameter.help,
        )
    )


def architecture_ui(key: str = "train_architecture") -> ArchitectureSpec:
    """Draws the architecture selectbox over every registry entry and its description.

    Args:
        key: Widget key.

    Returns:
        The chosen ArchitectureSpec.
    """
    names = list(ARCHITECTURES)
    name = st.selectbox(
        "Architecture",
        names,
        key=key,
        persist_state=PERSIST,
        format_func=lambda item: f"{ARCHITECTURES[item].label} ({item})",
        help="Every architecture of the registry; its own hyperparameters appear below.",
    )
    spec = ARCHITECTURES[name]
    facts = [f"min image size {spec.min_image_size} px"]
    if spec.pretrained_capable:
        facts.append("ImageNet weights possible (local file, never downloaded)")
    st.caption(f"{spec.description} — {'; '.join(facts)}.")
    return spec


def hyperparameters_ui(spec: ArchitectureSpec, columns: int = 3) -> dict[str, Any]:
    """Draws every hyperparameter an architecture lists, generically, in columns.

    Args:
        spec: The registry entry.
        columns: Number of widget columns.

    Returns:
        {ModelConfig field: value}.
    """
    values: dict[str, Any] = {}
    parameters = list(spec.hyperparameters)
    if not parameters:
        st.caption("This architecture has no hyperparameters.")
        return values
    slots = st.columns(columns)
    for index, parameter in enumerate(parameters):
        with slots[index % columns]:
            values[parameter.name] = option_ui(parameter, key=f"hp_{spec.name}_{parameter.name}")
    return values


def run_options_ui(prefix: str = "train") -> dict[str, Any]:
    """Draws what a cross-validation run needs besides its training: image size, label mode, k and seed.

    Args:
        prefix: Widget key prefix.

    Returns:
        Dict with image_size, label_mode, n_splits and random_state.
    """
    image_size = st.number_input(
        "Image size (px)",
        min_value=16,
        max_value=512,
        step=16,
        key=seeded(f"{prefix}_image_size", 64),
        persist_state=PERSIST,
        help="Side of the square grayscale input. Larger sees more detail but trains slower (CPU).",
    )
    label_mode = label_mode_ui(f"{prefix}_label_mode")
    n_splits = st.number_input(
        "Folds k",
        min_value=2,
        max_value=20,
        step=1,
        key=seeded(f"{prefix}_k", 5),
        persist_state=PERSIST,
        help="Patient-grouped stratified folds: each patient's images stay in one fold.",
    )
    random_state = st.number_input(
        "Seed",
        min_value=0,
        max_value=2**31 - 1,
        step=1,
        key=seeded(f"{prefix}_seed", 42),
        persist_state=PERSIST,
        help="Seed of the fold split and of each fold's training (fold i uses seed + i).",
    )
    return {
        "image_size": int(image_size),
        "label_mode": label_mode,
        "n_splits": int(n_splits),
        "random_state": int(random_state),
        **preprocessing_ui(prefix),
    }


def preprocessing_ui(prefix: str) -> dict[str, Any]:
    """Draws one widget per image preprocessing option of the registry (resize, contrast).

    Returns:
        {DataConfig field: value}.
    """
    return {option.name: option_ui(option, key=f"{prefix}_{option.short_name}") for option in PREPROCESSING_OPTIONS}


def training_options_ui(prefix: str = "train", columns: Sequence = ()) -> dict[str, Any]:
    """Draws one widget per training option of the registry (TRAINING_OPTIONS), in table order.

    Args:
        prefix: Widget key prefix; each key is "<prefix>_<option's short name>".
        columns: Streamlit columns to spread the widgets over (default: one after another).

    Returns:
        {TrainConfig field: value}.
    """
    slots = list(columns) or [st.container()]
    per_column = math.ceil(len(TRAINING_OPTIONS) / len(slots))
    values = {}
    for index, option in enumerate(TRAINING_OPTIONS):
        with slots[min(index // per_column, len(slots) - 1)]:
            values[option.name] = option_ui(option, key=f"{prefix}_{option.short_name}")
    return values


def evaluation_options_ui(prefix: str = "train") -> dict[str, Any]:
    """Draws how a run will choose its threshold, calibrate, and treat duplicate images.

    Returns:
        {"operating_point": OperatingPointChoice, "calibration_method", "duplicates", "tta", "tensorboard"}.

    Raises:
        ValueError: Never for the widgets' own ranges; the choice validates itself.
    """
    first, second, third = st.columns(3)
    with first:
        method = st.selectbox("Threshold method", THRESHOLD_METHODS, format_func=THRESHOLD_METHOD_LABELS.get,
                              key=seeded(f"{prefix}_threshold_method", THRESHOLD_METHODS[0]), persist_state=PERSIST,
                              help="Fitted on the out-of-fold predictions; it can be changed after training, on the run.")
        target = st.number_input("Target sensitivity or specificity", 0.5, 0.999, step=0.01, format="%.3f",
                                 key=seeded(f"{prefix}_threshold_target", 0.95), persist_state=PERSIST)
        cost_ratio = st.number_input("Cost ratio (missed pneumonia : false alarm)", 0.01, 100.0, 1.0, 0.5,
                                     key=f"{prefix}_cost_ratio", persist_state=PERSIST)
    with second:
        stated = st.checkbox("State the expected prevalence", value=False, key=f"{prefix}_prevalence_stated", persist_state=PERSIST,
                             help="The share of pneumonia where the model will be used; PPV, NPV and the cost method follow from it.")
        prevalence = st.slider("Expected prevalence", 0.01, 0.99, 0.3, 0.01, format="%.2f", key=f"{prefix}_prevalence", persist_state=PERSIST)
        probabilities = st.radio("Probabilities", PROBABILITY_SCALES, horizontal=True, key=f"{prefix}_probabilities", persist_state=PERSIST,
                                 help="calibrated: recalibrated on the out-of-fold predictions before thresholding.")
    with third:
        calibration_method = st.selectbox("Calibration", CALIBRATION_METHODS, key=f"{prefix}_calibration", persist_state=PERSIST,
                                          help="temperature: one number that cools over-confident outputs; platt: a logistic fit (binary runs).")
        duplicates = st.selectbox("Duplicate images", DUPLICATE_POLICIES, key=f"{prefix}_duplicates", persist_state=PERSIST,
                                  help=DUPLICATE_POLICY_HELP)
        tta = st.checkbox("Test-time augmentation", key=seeded(f"{prefix}_tta", False), persist_state=PERSIST,
                          help="Score the out-of-fold images, and later predictions, as the mean over 4 variants "
                          "(identity, a 90 % zoom, darker, brighter): 4x the forward passes.")
    choice = OperatingPointChoice(
        method,
        target=float(target) if method.startswith("target-") else None,
        cost_ratio=float(cost_ratio),
        prevalence=float(prevalence) if stated else None,
        probabilities=probabilities,
    )
    tensorboard = st.checkbox("TensorBoard logs", key=seeded(f"{prefix}_tensorboard", True), persist_state=PERSIST,
                              help="Every fold logs its epoch scalars to runs/<id>/tensorboard/fold_<k>: "
                              "`tensorboard --logdir runs` shows them next to every other run.")
    return {"operating_point": choice, "calibration_method": calibration_method, "duplicates": duplicates, "tta": bool(tta),
            "tensorboard": bool(tensorboard)}


ENGINE_LABELS = {
    "auto": "auto (in the worker for tiny runs, else a process per fold)",
    "local": "local: a fresh process per fold",
    "inprocess": "in-process: one after another in the worker",
    "ray": "Ray: a task each, on a private Ray or a cluster",
}


def engine_ui(prefix: str = "train", engines: Sequence[str] = ENGINES, default: str = "auto", engine_help: str = ENGINE_HELP,
              unit: str = "folds") -> dict[str, Any]:
    """Draws where the folds (or trials) train, how many at once, and a Ray cluster's address.

    An address with engine auto (or the Tune page's default) means Ray, as on the command line.

    Returns:
        {"engine": one of `engines`, "parallel": a count or "auto", "ray_address": text or None}.
    """
    left, middle, right = st.columns([1.6, 1, 1.4])
    engine = left.selectbox("Engine", list(engines), format_func=ENGINE_LABELS.get, key=seeded(f"{prefix}_engine", default),
                            persist_state=PERSIST, help=engine_help)
    together = middle.selectbox(f"{unit.capitalize()} at once", ["1", "2", "3", "4", "5", "auto"], key=seeded(f"{prefix}_parallel", "1"),
                                persist_state=PERSIST,
                                help=f"How many {unit} train at the same time (not in-process); auto sizes it by cores and memory, "
                                "or on Ray by the cluster's CPUs. Each then gets its share of the cores.")
    address = right.text_input("Ray address", key=seeded(f"{prefix}_ray_address", ""), persist_state=PERSIST,
                               placeholder="empty: a private local Ray",
                               help="With engine Ray: auto (the cluster `ray start --head` runs on this machine), HOST:PORT or "
                               "ray://HOST:10001. Empty starts a private local Ray for the run.").strip()
    if address and engine == default:
        engine = "ray"
    return {
        "engine": engine,
        "parallel": 1 if engine == "inprocess" else (together if together == "auto" else int(together)),
        "ray_address": address or None,
    }


def run_name_ui(prefix: str = "train") -> str:
    """Draws the optional run name and returns it stripped."""
    value = st.text_input(
        "Run name",
        value="",
        key=f"{prefix}_run_name",
        persist_state=PERSIST,
        max_chars=80,
        placeholder="optional, e.g. baseline-cnn",
    )
    return str(value).strip()
