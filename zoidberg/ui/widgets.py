"""Reusable widget groups: each `*_ui` function draws widgets and returns their values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import streamlit as st

from zoidberg.config import CLASS_WEIGHTINGS, LABEL_MODES, OPTIMIZERS
from zoidberg.models import ARCHITECTURES, ArchitectureSpec, HyperParameter
from zoidberg.runstore import Run
from zoidberg.ui import state

SYNTHETIC_NOTICE = "Synthetic demo data — not real X-rays"

STATE_ICONS = {
    "queued": "⏳",
    "running": "🏃",
    "completed": "✅",
    "stopped": "⏹️",
    "failed": "❌",
    "interrupted": "⚠️",
}
STATE_COLORS = {
    "queued": "gray",
    "running": "blue",
    "completed": "green",
    "stopped": "orange",
    "failed": "red",
    "interrupted": "orange",
}
LABEL_MODE_HELP = (
    "binary: normal vs pneumonia. three-class: normal / bacterial / viral, read from the "
    "file names (personN_bacteria_M, personN_virus_M)."
)

# Widget values survive page switches, so the Train form is as the user left it.
PERSIST = "session"

# Integer ranges up to this many steps are drawn as sliders; wider ones as number inputs.
MAX_SLIDER_STEPS = 60


def synthetic_notice(synthetic: bool) -> None:
    """Warns, unmissably, that the data is the generated demo set.

    Args:
        synthetic: Whether the dataset is synthetic.
    """
    if synthetic:
        st.warning(
            f"**{SYNTHETIC_NOTICE}.** These images were drawn by `zoidberg.demo` from random numbers so the "
            "dashboard can be tried without downloading data. Models trained on them learn the drawings, not medicine.",
            icon="🧪",
        )


def chosen_data_folder_ui() -> str:
    """Shows the data folder chosen on the Data page, marked when synthetic, and returns it.

    Returns:
        The data folder.
    """
    data_dir = state.chosen_data_dir()
    st.caption(f"Data folder: `{data_dir}` — choose another on the **Data** page.")
    if state.is_synthetic(data_dir):
        st.caption("🧪 **Synthetic demo data — not real X-rays.**")
    return data_dir


MARKDOWN_SPECIAL = "\\`*_[]<>#~|$"


def escape_markdown(text: str) -> str:
    """Makes engine messages display literally in Streamlit Markdown.

    Paths such as `<root>/train/NORMAL/*.jpeg` would otherwise turn into italics, and
    `$` into LaTeX; line breaks are kept.

    Args:
        text: Plain text.

    Returns:
        Markdown that renders as the same text.
    """
    escaped = "".join(f"\\{character}" if character in MARKDOWN_SPECIAL else character for character in str(text))
    return escaped.replace("\n", "  \n")


def show_error(error: BaseException | str, prefix: str = "") -> None:
    """Shows an error message in plain words, never a traceback.

    Args:
        error: The exception (its message is shown) or a message.
        prefix: Bold words before the message, e.g. "Not started."
    """
    lead = f"**{prefix}** " if prefix else ""
    st.error(lead + escape_markdown(str(error)), icon="🚫")


def state_badge(state: str) -> str:
    """Returns Markdown for a coloured state badge.

    Args:
        state: A run state (queued, running, completed, stopped, failed, interrupted).

    Returns:
        Markdown such as ":green-badge[✅ completed]".
    """
    color = STATE_COLORS.get(state, "gray")
    return f":{color}-badge[{STATE_ICONS.get(state, '•')} {state}]"


def run_label(run: Run, state: str | None = None) -> str:
    """Returns a one-line description of a run for pickers.

    Args:
        run: The run.
        state: Its state, when already known (saves a status read).

    Returns:
        "icon name · architecture · k folds · id (state)".
    """
    state = state or run.state
    config = run.config
    model = config.get("model", {}) if isinstance(config, dict) else {}
    data = config.get("data", {}) if isinstance(config, dict) else {}
    facts = [
        str(model.get("architecture", "?")),
        f"{data.get('image_size', '?')} px",
        f"k={config.get('n_splits', '?')}" if isinstance(config, dict) else "k=?",
    ]
    name = run.name if run.name != run.id else ""
    title = f"{name} · " if name else ""
    return f"{STATE_ICONS.get(state, '•')} {title}{' · '.join(facts)} · {run.id} ({state})"


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
        index=LABEL_MODES.index(default),
        key=key,
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


def hyperparameter_ui(parameter: HyperParameter, key: str) -> Any:
    """Draws one registry hyperparameter with the widget its kind calls for.

    Args:
        parameter: The registry's description of the field.
        key: Widget key (unique per architecture and field).

    Returns:
        The chosen value, of the field's type.
    """
    label = parameter.name.replace("_", " ").capitalize()
    if parameter.kind == "bool":
        return st.checkbox(label, value=bool(parameter.default), key=key, persist_state=PERSIST, help=parameter.help)
    if parameter.kind == "choice":
        choices = list(parameter.choices)
        return st.selectbox(
            label,
            choices,
            index=choices.index(parameter.default),
            key=key,
            persist_state=PERSIST,
            help=parameter.help,
            format_func=format_choice,
        )
    if parameter.kind == "int":
        return _int_ui(parameter, label, key)
    return _float_ui(parameter, label, key)


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
                int(parameter.default),
                step=step,
                key=key,
                persist_state=PERSIST,
                help=parameter.help,
            )
        )
    return int(
        st.number_input(
            label,
            min_value=None if low is None else int(low),
            max_value=None if high is None else int(high),
            value=int(parameter.default),
            step=step,
            key=key,
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
                float(parameter.default),
                step=float(parameter.step),
                key=key,
                persist_state=PERSIST,
                help=parameter.help,
            )
        )
    return float(
        st.number_input(
            label,
            min_value=None if low is None else float(low),
            max_value=None if high is None else float(high),
            value=float(parameter.default),
            format="%g",
            key=key,
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
            values[parameter.name] = hyperparameter_ui(parameter, key=f"hp_{spec.name}_{parameter.name}")
    return values


def learning_rate_ui(key: str, default: float = 1e-3) -> float:
    """Draws the learning rate as a log-spaced choice plus nothing else to mistype.

    Args:
        key: Widget key.
        default: Initial rate (must be one of the offered values).

    Returns:
        The learning rate.
    """
    options = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    return st.select_slider(
        "Learning rate",
        options=options,
        value=default,
        key=key,
        persist_state=PERSIST,
        format_func=lambda value: f"{value:g}",
        help="Step size of the optimizer; 0.001 suits Adam, 0.01 suits SGD.",
    )


def training_options_ui(prefix: str = "train") -> dict[str, Any]:
    """Draws the options common to every architecture.

    Args:
        prefix: Widget key prefix.

    Returns:
        Dict with image_size, label_mode, n_splits, epochs, batch_size, learning_rate,
        optimizer, early_stopping_patience, class_weighting, augmentation, random_state
        and run_name.
    """
    first, second, third = st.columns(3)
    with first:
        image_size = st.number_input(
            "Image size (px)",
            min_value=16,
            max_value=512,
            value=64,
            step=16,
            key=f"{prefix}_image_size",
            persist_state=PERSIST,
            help="Side of the square grayscale input. Larger sees more detail but trains slower (CPU).",
        )
        label_mode = label_mode_ui(f"{prefix}_label_mode")
        n_splits = st.number_input(
            "Folds k",
            min_value=2,
            max_value=20,
            value=5,
            step=1,
            key=f"{prefix}_k",
            persist_state=PERSIST,
            help="Patient-grouped stratified folds: each patient's images stay in one fold.",
        )
        random_state = st.number_input(
            "Seed",
            min_value=0,
            max_value=2**31 - 1,
            value=42,
            step=1,
            key=f"{prefix}_seed",
            persist_state=PERSIST,
            help="Seed of the fold split and of each fold's training (fold i uses seed + i).",
        )
    with second:
        epochs = st.number_input(
            "Epochs", min_value=1, max_value=1000, value=5, step=1, key=f"{prefix}_epochs", persist_state=PERSIST
        )
        batch_size = st.select_slider(
            "Batch size", options=[4, 8, 16, 32, 64, 128, 256], value=32, key=f"{prefix}_batch_size"
        )
        learning_rate = learning_rate_ui(f"{prefix}_learning_rate")
        optimizer = st.selectbox("Optimizer", OPTIMIZERS, key=f"{prefix}_optimizer", persist_state=PERSIST)
    with third:
        early_stopping_patience = st.number_input(
            "Early-stopping patience",
            min_value=0,
            max_value=100,
            value=3,
            step=1,
            key=f"{prefix}_patience",
            persist_state=PERSIST,
            help="Stop a fold after this many epochs without a lower validation loss (0 = off); the best weights are kept.",
        )
        class_weighting = st.selectbox(
            "Class weighting",
            CLASS_WEIGHTINGS,
            key=f"{prefix}_class_weighting",
            persist_state=PERSIST,
            help="balanced weighs each class by the inverse of its frequency, so the minority class counts as much.",
        )
        augmentation = st.checkbox(
            "Augmentation",
            value=False,
            key=f"{prefix}_augmentation",
            persist_state=PERSIST,
            help="Small rotations, zooms, shifts and contrast changes (no flips: the heart sits on the left).",
        )
        run_name = st.text_input(
            "Run name",
            value="",
            key=f"{prefix}_run_name",
            persist_state=PERSIST,
            max_chars=80,
            placeholder="optional, e.g. baseline-cnn",
        )
    return {
        "image_size": int(image_size),
        "label_mode": label_mode,
        "n_splits": int(n_splits),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "optimizer": optimizer,
        "early_stopping_patience": int(early_stopping_patience),
        "class_weighting": class_weighting,
        "augmentation": bool(augmentation),
        "random_state": int(random_state),
        "run_name": str(run_name).strip(),
    }


def run_picker_ui(runs: Sequence[Run], states: dict[str, str], selected: str | None) -> str | None:
    """Draws the picker of cross-validation runs, newest first, with state icons.

    Args:
        runs: Runs, newest first.
        states: {run id: state}.
        selected: The run id to show selected, if it is among the runs.

    Returns:
        The chosen run id, or None when there are no runs.
    """
    if not runs:
        return None
    ids = [run.id for run in runs]
    labels = {run.id: run_label(run, states.get(run.id)) for run in runs}
    index = ids.index(selected) if selected in ids else 0
    return st.selectbox(
        "Run",
        ids,
        index=index,
        format_func=lambda run_id: labels[run_id],
        help="Running and past cross-validation runs from the run store, newest first.",
    )


def format_number(value: Any, digits: int = 3) -> str:
    """Formats a metric value, with an em dash for missing or non-finite values.

    Args:
        value: A number or None.
        digits: Decimals.

    Returns:
        The text.
    """
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"
