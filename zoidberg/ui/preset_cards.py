"""The Train page's presets: one card per recipe, started with one click or written into the form."""

from __future__ import annotations

import streamlit as st

from zoidberg.models.presets import PRESETS, Preset, make_preset_config, missing_weights
from zoidberg.options.registry import ARCHITECTURES, PREPROCESSING_OPTIONS, TRAINING_OPTIONS
from zoidberg.runs.store import RunStore
from zoidberg.ui import state
from zoidberg.ui.widgets import escape_markdown, show_error

# The form's widget keys of the run options (form_widgets.run_options_ui, evaluation_options_ui).
RUN_OPTION_KEYS = {"image_size": "train_image_size", "n_splits": "train_k", "random_state": "train_seed"}
OPERATING_POINT_KEYS = {"method": "train_threshold_method", "target": "train_threshold_target"}
# Remembers which preset last filled the form, so that its run records it.
FILLED_KEY = "train_preset_filled"


def form_keys(preset: Preset) -> dict[str, object]:
    """{Train-form widget key: value} of a single-run preset: every field, its own values over the defaults.

    Fields the preset leaves out take their registry defaults, so that the form shows the
    preset and not a mix of it with what was typed before.
    """
    architecture = preset.architecture
    keys: dict[str, object] = {"train_architecture": architecture}
    for parameter in ARCHITECTURES[architecture].hyperparameters:
        keys[f"hp_{architecture}_{parameter.name}"] = preset.model.get(parameter.name, parameter.default)
    values = {**preset.train, **preset.data, **preset.run}
    for option in (*TRAINING_OPTIONS, *PREPROCESSING_OPTIONS):
        keys[f"train_{option.short_name}"] = values.get(option.name, option.default)
    for name, key in RUN_OPTION_KEYS.items():
        if name in values:
            keys[key] = values[name]
    keys["train_tta"] = bool(values.get("tta", False))
    for name, key in OPERATING_POINT_KEYS.items():
        if name in preset.operating_point:
            keys[key] = preset.operating_point[name]
    return keys


def fill_form(preset: Preset) -> None:
    """Writes a preset's values into the Train form's widgets (the next rerun shows them)."""
    for key, value in form_keys(preset).items():
        st.session_state[key] = value
    st.session_state[FILLED_KEY] = preset.name


def filled_preset() -> str | None:
    """The preset that last filled the form, if any (recorded in the run's config.json)."""
    return st.session_state.get(FILLED_KEY)


def presets_ui(data_dir: str) -> None:
    """Draws one card per preset: what it trains, its time here, the weights it needs, Start and Fill."""
    st.markdown("**Presets**: start a tested recipe with one click, or fill the form with it and change any field.")
    columns = st.columns(len(PRESETS))
    last_times = last_preset_times()
    for column, preset in zip(columns, PRESETS.values()):
        with column, st.container(border=True):
            _card(preset, data_dir, last_times.get(preset.name))


def last_preset_times() -> dict[str, str]:
    """Preset name → the wall time of this store's most recently ended completed run of it, with the run's id."""
    from zoidberg.runs.progress import format_duration

    try:
        runs = RunStore().list_runs()
    except OSError:
        return {}
    latest: dict[str, tuple[str, str]] = {}
    for run in runs:
        name = run.config.get("preset")
        if name not in PRESETS or run.state != "completed":
            continue
        ended, seconds = str(run.status().get("ended") or ""), run.wall_seconds()
        if seconds is not None and ended > latest.get(name, ("", ""))[0]:
            latest[name] = (ended, f"{format_duration(seconds)} (run {run.id})")
    return {name: text for name, (_, text) in latest.items()}


def _card(preset: Preset, data_dir: str, last_time: str | None) -> None:
    """One preset's card."""
    st.markdown(f"**{preset.label}** · `{preset.name}`")
    synthetic = state.is_synthetic(data_dir)
    st.caption(f"📁 Trains on `{data_dir}`" + (" — 🧪 **the synthetic demo data, not X-rays**" if synthetic else ""))
    st.caption(escape_markdown(preset.description))
    st.caption(f"⏱ {preset.expected_time}")
    if last_time:
        st.caption(f"⏱ Here, last time: {last_time}")
    if preset.site_figures:
        st.caption(f"🏥 {escape_markdown(preset.site_figures)}")
    missing = missing_weights(preset.name) if preset.needs_weights else []
    if preset.needs_weights:
        needs = ", ".join(f"MobileNetV2 {alpha:g}" for _, alpha in preset.weights_needed())
        st.caption(("⚠️ Missing ImageNet weights: " if missing else "✅ ImageNet weights here: ") + needs)
    else:
        st.caption("No weights file needed.")
    if st.button(f"▶ Start {preset.label.lower()}", key=f"preset_start_{preset.name}", type="primary", disabled=bool(missing)):
        start_preset(preset, data_dir)
    if missing:
        st.caption(escape_markdown(missing[0]))
        if st.session_state.get(f"preset_download_error_{preset.name}"):
            st.error(escape_markdown(st.session_state[f"preset_download_error_{preset.name}"]), icon="📡")
        st.button("⬇ Download the weights", key=f"preset_download_{preset.name}", on_click=download_weights, args=(preset,),
                  help="Fetches the missing files with Keras' own downloader (official URL and hash) into the Keras cache; "
                  "10 s connect timeout, so an offline machine answers at once.")
        if preset.alternative:
            st.caption(f"Without weights, start **{PRESETS[preset.alternative].label}** instead.")
    if not preset.is_ensemble:
        st.button("Fill the form", key=f"preset_fill_{preset.name}", on_click=fill_form, args=(preset,),
                  help="Writes this preset into the form below; change any field, then start it there.")
    else:
        st.caption("Trains " + ", ".join(f"**{PRESETS[member].label}**" for member in preset.members) + ", then averages them.")


def download_weights(preset: Preset) -> None:
    """Downloads the ImageNet files a preset needs and lacks; a failure (offline) is one message, never a traceback."""
    from zoidberg.models.weights import WeightsNotFoundError, download_imagenet_weights, resolve_imagenet_weights

    for architecture, alpha in preset.weights_needed():
        try:
            resolve_imagenet_weights(architecture, alpha, "imagenet", 224)
            continue
        except WeightsNotFoundError:
            pass
        try:
            with st.spinner(f"Downloading MobileNetV2 {alpha:g} ImageNet weights…"):
                path = download_imagenet_weights(architecture, alpha)
        except WeightsNotFoundError as error:
            st.session_state[f"preset_download_error_{preset.name}"] = str(error)
            return
        st.toast(f"Downloaded {path}", icon="✅")
    st.session_state.pop(f"preset_download_error_{preset.name}", None)


def start_preset(preset: Preset, data_dir: str) -> None:
    """Starts (or attaches to) a preset's run on the chosen data folder, and selects it."""
    try:
        config = make_preset_config(preset.name, data_dir, run_name=f"{preset.label} preset")
        kind = "ensemble" if preset.is_ensemble else "cv"
        run_id, attached = state.start_or_attach(kind, config)
    except (ValueError, FileNotFoundError, OSError) as error:
        show_error(error, f"The {preset.label.lower()} preset did not start.")
        return
    state.select_run(run_id)
    if attached:
        st.info(f"This preset is already running on this folder: showing `{run_id}`.", icon="🔁")
    else:
        st.toast(f"Started the {preset.label.lower()} preset: {run_id}", icon="🚀")

