"""Label page pieces: the site's films one at a time, large, with window and zoom; keys; the labels file; adaptation as labels come."""

from __future__ import annotations

import getpass
import io
import logging
from pathlib import Path

import numpy as np
import streamlit as st

from zoidberg.adaptation.labeling import ROUND_SIZE, learning_curve, round_config, round_due, stop_sentence
from zoidberg.adaptation.next_films import NOT_USABLE_QUESTION, NextFilm, choose_next_films, film_key
from zoidberg.data.site_labels import LabelEntry, LabelsFileError, SiteLabels, append_label, read_labels
from zoidberg.runs.store import RunStore
from zoidberg.ui.widgets import escape_markdown

LOGGER = logging.getLogger(__name__)
QUEUE_KEY = "label_queue"
SKIPPED_KEY = "label_skipped"
EVERY_KEY = "label_every"  # Adapt again after this many new labels (the page's K).
HISTORY_KEY = "label_history"  # The films this session labeled, in order: what Undo takes back first.
# The keys the page answers to, and what each writes.
KEYS = {"n": "normal", "p": "pneumonia", "u": "not_usable"}
DISPLAY_SIDE = 900


def reader_name() -> str:
    """Who labels: the login's e-mail or name, else this machine's user."""
    try:
        user = st.user
        if user.get("is_logged_in"):
            return str(user.get("email") or user.get("name"))
    except Exception:  # No login configured: st.user holds nothing to read.
        pass
    return getpass.getuser()


@st.cache_resource(max_entries=4, show_spinner=False)
def _scored_candidates(runs_root: str, run_id: str, signature: tuple, folder: str, listing: tuple) -> list[dict]:
    """The prediction records of every film of the folder (scored, gated), once per run and folder content."""
    from zoidberg.inference.scoring import predict_files
    from zoidberg.ui.predict_results import load_ensemble_cached

    store = RunStore(runs_root)
    ensemble = load_ensemble_cached(store, store.get(run_id))
    return predict_files(ensemble, [Path(path) for path, _, _ in listing], door="label")


def candidate_records(store: RunStore, run, folder: str) -> list[dict]:
    """The films under a folder, each scored and gated as predict does (cached; a new or changed file scores again)."""
    from zoidberg.data.files import collect_images
    from zoidberg.ui.predict_results import models_signature

    paths, _ = collect_images([folder])
    stats = [(path, path.stat()) for path in paths]
    listing = tuple((str(path), stat.st_size, stat.st_mtime_ns) for path, stat in stats)
    if not listing:
        return []
    with st.spinner(f"Scoring the {len(listing)} films once (the gate first), to choose which to label ..."):
        return _scored_candidates(str(store.root), run.id, models_signature(run), folder, listing)


def read_labels_ui(labels_file: Path) -> SiteLabels | None:
    """The labels so far (None before the first); a broken file is one sentence."""
    if not labels_file.exists():
        return None
    try:
        labels = read_labels(labels_file)
    except LabelsFileError as error:
        st.error(str(error))
        st.stop()
    if labels.ignored_lines:
        st.caption("Skipped in the labels file: " + "; ".join(labels.ignored_lines))
    return labels


def in_second_share(film: str, share: float) -> bool:
    """Whether a film is one of those read twice: a fixed share of the films, the same for every reader."""
    import hashlib

    return int(hashlib.sha256(film.encode("utf-8", "surrogateescape")).hexdigest()[:8], 16) % 1000 < share * 1000


def next_film(records: list[dict], labels: SiteLabels | None, threshold: float, second_share: float = 0.0) -> NextFilm | None:
    """The film to show: the head of this session's queue still to label and not skipped; a new round when it runs dry.

    With a second reader, the share of films another reader labeled comes first: read again, blind to the first label.
    """
    me = reader_name()
    # Every film as one absolute path (or UID), whether the page, a script or another tool wrote its label.
    readers = {} if labels is None else {labels.where(film): said for film, said in labels.readers.items()}
    twice = [film for film, said in readers.items() if me not in said and len(said) == 1 and in_second_share(film, second_share)]
    done = {film for film in readers if film not in twice}
    skipped = st.session_state.setdefault(SKIPPED_KEY, set())
    # Second readings first, whenever the share asks for them (it can change between two films).
    again = [NextFilm(film, "label", "second reader", "a second reading: another reader labeled it, and the two labels are compared")
             for film in twice if film not in skipped]
    queued = [film for film in st.session_state.get(QUEUE_KEY, []) if film_key({"file": film.file}) not in done | skipped | set(twice)]
    if not queued:
        fresh = choose_next_films(records, labels, count=ROUND_SIZE + len(skipped), threshold=threshold)
        queued = [film for film in fresh if film_key({"file": film.file}) not in skipped]
    queue = again + queued
    st.session_state[QUEUE_KEY] = queue
    return queue[0] if queue else None


def agreement_ui(labels: SiteLabels | None) -> float:
    """The second reader's share, and how the readers agree (Cohen's kappa, the films they disagree on); returns the share."""
    with st.expander("Second reader"):
        share = st.slider("Share of films read by a second reader (%)", 0, 50, 0, 5, key="label_second",
                          help="A fixed share of the films one reader labeled is shown to the next reader, blind to the first label.") / 100
        figures = labels.agreement() if labels is not None else {"n": 0}
        if not figures["n"]:
            st.caption("No film has two readers yet.")
            return share
        st.markdown(f"**{figures['n']} films read twice**: the readers agree on {figures['agreed']:.0%}, Cohen's kappa "
                    f"{figures['kappa']:.2f}. Films they disagree on are left out of adaptation until they agree.")
        if figures["disagreements"]:
            st.dataframe([{**row, "film": Path(row["film"]).name} for row in figures["disagreements"]], hide_index=True)
    return share


@st.cache_data(max_entries=64, show_spinner=False)
def _display(path: str, size: int, mtime: int) -> np.ndarray:
    """A film decoded for the eye (grayscale, at most DISPLAY_SIDE wide); cached, so the prefetched next film shows at once."""
    from PIL import Image

    from zoidberg.data.imaging import decode_grayscale

    gray = decode_grayscale(path, draft_size=DISPLAY_SIDE)
    image = Image.fromarray(gray)
    if image.width > DISPLAY_SIDE:
        image = image.resize((DISPLAY_SIDE, round(image.height * DISPLAY_SIDE / image.width)))
    return np.asarray(image)


def display_image(path: str) -> np.ndarray:
    """The film as it is shown (cached by path, size and time)."""
    stat = Path(path).stat()
    return _display(path, stat.st_size, stat.st_mtime_ns)


def windowed(gray: np.ndarray, center: int, width: int, zoom: float) -> bytes:
    """The film with a display window (center and width on 0-255) and a zoom on its middle, as JPEG bytes (quick to encode)."""
    from PIL import Image

    low, high = center - width / 2, center + width / 2
    shown = np.clip((gray.astype(np.float32) - low) / max(high - low, 1.0) * 255.0, 0, 255).astype(np.uint8)
    if zoom > 1.0:
        height, width_px = shown.shape
        keep_h, keep_w = int(height / zoom), int(width_px / zoom)
        top, left = (height - keep_h) // 2, (width_px - keep_w) // 2
        shown = np.asarray(Image.fromarray(shown[top : top + keep_h, left : left + keep_w]).resize((width_px, height)))
    buffer = io.BytesIO()
    Image.fromarray(shown).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def write_label(labels_file: Path, film: NextFilm, label: str) -> None:
    """Appends the reader's label of the film (whole or not at all), with how the film was chosen."""
    path = Path(film.file).resolve()
    append_label(labels_file, LabelEntry(
        file=str(path), label=label, reader=reader_name(), chosen_by=film.chosen_by, reason=film.reason,
        study_uid=film.uids.get("study_uid", ""), series_uid=film.uids.get("series_uid", ""), sop_uid=film.uids.get("sop_uid", ""),
    ))
    st.session_state.setdefault(HISTORY_KEY, []).append(str(path))


def undo_last(labels_file: Path, labels: SiteLabels | None) -> str | None:
    """Takes back this reader's last label (a retraction line); returns the film, or None when there is nothing to undo."""
    if labels is None:
        return None
    me = reader_name()
    mine = {labels.where(entry.film): entry for entry in labels.films.values() if entry.reader == me}
    history = [film for film in st.session_state.get(HISTORY_KEY, []) if film in mine]
    if not mine:
        return None
    # This session's last label first; after a reload, the reader's latest in the file.
    last = mine[history[-1]] if history else max(mine.values(), key=lambda entry: entry.labeled_at)
    if history:
        st.session_state[HISTORY_KEY] = history[:-1]
    append_label(labels_file, LabelEntry(file=last.file, label="retracted", reader=me, sop_uid=last.sop_uid))
    # The film comes back first.
    st.session_state[QUEUE_KEY] = [NextFilm(str(labels.resolve(last)), "label", last.chosen_by, last.reason)] + st.session_state.get(QUEUE_KEY, [])
    return last.file


def film_view_ui(film: NextFilm, ensemble) -> None:
    """The film, large, with window and zoom; Grad-CAM only when asked for."""
    gray = display_image(film.file)
    view, controls = st.columns([4, 1])
    with controls:
        center = st.slider("Window centre", 0, 255, 128, key="label_center")
        width = st.slider("Window width", 16, 255, 255, key="label_width")
        zoom = st.slider("Zoom", 1.0, 4.0, 1.0, 0.25, key="label_zoom")
        gradcam = st.toggle("Where the model looks", value=False, key="label_gradcam",
                            help="Grad-CAM, only on request: the model should not lead the reader.")
    with view:
        if film.ask == NOT_USABLE_QUESTION:
            st.warning(f"**Is this film usable at all?** {escape_markdown(film.reason)}", icon="🚫")
        st.image(windowed(gray, center, width, zoom), use_container_width=True, caption=Path(film.file).name)
        if gradcam and film.ask != NOT_USABLE_QUESTION:
            from zoidberg.inference.explain import overlay_heatmap

            model_input = ensemble.resized(gray)
            st.image(overlay_heatmap(model_input, ensemble.gradcam(model_input, 1), alpha=0.4), caption="Grad-CAM (pneumonia)", width=360)


def _skip(film: NextFilm) -> None:
    st.session_state.setdefault(SKIPPED_KEY, set()).add(film_key({"file": film.file}))


def _undo(labels_file: Path) -> None:
    undone = undo_last(labels_file, read_labels(labels_file) if labels_file.exists() else None)
    st.toast(f"Took back the label of {Path(undone).name}." if undone else "Nothing of yours to undo.")


def actions_ui(labels_file: Path, film: NextFilm | None) -> None:
    """The five buttons and their keys: N normal, P pneumonia, U not usable, S skip, Z undo.

    Each acts in its callback, before the rerun that its click starts: one rerun per key, which then shows the next film.
    """
    columns = st.columns(5)
    if film is not None:
        for column, (key, label) in zip(columns, KEYS.items()):
            column.button(f"{label.replace('_', ' ').capitalize()} ({key.upper()})", key=f"label_{label}", shortcut=key,
                          use_container_width=True, type="primary" if label != "not_usable" else "secondary",
                          on_click=write_label, args=(labels_file, film, label))
        columns[3].button("Skip (S)", key="label_skip", shortcut="s", use_container_width=True, on_click=_skip, args=(film,))
    columns[4].button("Undo (Z)", key="label_undo", shortcut="z", use_container_width=True, on_click=_undo, args=(labels_file,))


def progress_ui(labels: SiteLabels | None, candidates: int) -> None:
    """How many films are labeled, of which class."""
    if labels is None:
        st.caption(f"No label yet; {candidates} films to choose from.")
        return
    st.caption(f"{len(labels.films)} labeled of {candidates}: {labels.count('normal')} normal, {labels.count('pneumonia')} pneumonia, "
               f"{labels.count('not_usable')} not usable; {len(labels.disagreements)} where readers disagree.")


@st.fragment
def labeling_ui(run, ensemble, records: list[dict], labels_file: Path) -> None:
    """The reader's part, rerun alone on every key: the labels so far, the film, its buttons; the rest of the page waits.

    Every K labels (the page's round size) the whole page runs again, so that the round's adaptation starts.
    """
    labels = read_labels_ui(labels_file)
    second_share = agreement_ui(labels)
    film = next_film(records, labels, ensemble.threshold, second_share)
    progress_ui(labels, len(records))
    actions_ui(labels_file, film)
    if film is None:
        st.success("Every film here is labeled (or skipped this session).")
    else:
        film_view_ui(film, ensemble)
        prefetch_next()
    usable = 0 if labels is None else len(labels.usable())
    every = int(st.session_state.get(EVERY_KEY, ROUND_SIZE))
    if usable and usable % every == 0 and st.session_state.get("label_round_at") != usable:
        st.session_state["label_round_at"] = usable
        st.rerun()


def rounds_ui() -> tuple[bool, int]:
    """Whether to adapt in the background as labels come, and every how many labels (K)."""
    left, right = st.columns([3, 1])
    every = right.number_input("K, labels between rounds", min_value=5, max_value=200, value=ROUND_SIZE, step=5, key=EVERY_KEY)
    auto = left.toggle(f"Adapt in the background every {every} labels", value=True, key="label_auto")
    return auto, int(every)


@st.fragment(run_every=15)
def adaptation_ui(store: RunStore, parent, labels_file: Path, auto: bool, every: int = ROUND_SIZE) -> None:
    """Adapts in the background every K labels (or on request), then draws the learning curve and the stop sentence.

    It looks again every 15 s, so that a round that ends in the background shows on the curve.
    """
    from zoidberg.ui.state import start_or_attach

    try:
        labels = read_labels(labels_file) if labels_file.exists() else None
    except LabelsFileError:
        return  # The reader's part above says what is wrong with the file.

    points = learning_curve(store, labels_file, parent.id)
    adapted_at = [point.n_labels for point in points]
    running = [run for run in store.list_runs("adapt") if run.state in ("queued", "running")
               and (run.config or {}).get("labels_file") == str(labels_file.resolve())]
    if labels is not None and not running:
        due = round_due(labels, adapted_at, every)
        if (auto and due) or st.button("Adapt now on every label so far", key="label_adapt_now", disabled=len(labels.usable()) < 4):
            try:
                run_id, _ = start_or_attach("adapt", round_config(parent.id, labels_file, labels))
                st.toast(f"Adapting on {len(labels.usable())} labels in the background (run {run_id}).")
            except (ValueError, FileNotFoundError) as error:
                st.caption(f"Not adapted yet: {error}")
    if running:
        st.caption(f"Adapting in the background (run {running[0].id}); the curve grows when it ends.")
    if not points:
        st.caption(f"The learning curve starts after the first adaptation (every {every} labels, with at least 2 patients of each class).")
        return
    st.plotly_chart(learning_curve_figure(points), use_container_width=True, key="label_curve")
    st.info(stop_sentence(points), icon="🧭")
    st.caption(f"The last round's adapted run, {points[-1].run_id}, predicts, exports and reports as any run (Predict, Train).")


CURVE_FIGURES = {"roc_auc": "AUC", "accuracy": "accuracy", "specificity": "specificity"}


def learning_curve_figure(points):
    """Cross-fitted AUC, accuracy and specificity against the number of labels, with their intervals, beside the zero-shot figures."""
    import plotly.graph_objects as go

    figure = go.Figure()
    counts = [point.n_labels for point in points]
    for (name, title), color in zip(CURVE_FIGURES.items(), ("#1f77b4", "#2ca02c", "#d62728")):
        estimates = [point.figures[name]["estimate"] for point in points]
        low = [point.figures[name]["estimate"] - (point.figures[name].get("low") or point.figures[name]["estimate"]) for point in points]
        high = [(point.figures[name].get("high") or point.figures[name]["estimate"]) - point.figures[name]["estimate"] for point in points]
        figure.add_trace(go.Scatter(x=counts, y=estimates, name=f"{title}, adapted (cross-fitted)", mode="lines+markers", line={"color": color},
                                    error_y={"type": "data", "symmetric": False, "array": high, "arrayminus": low, "thickness": 1}))
        zero = (points[-1].zero_shot.get(name) or {}).get("estimate")
        if zero is not None:
            figure.add_trace(go.Scatter(x=[counts[0], counts[-1]], y=[zero, zero], name=f"{title}, zero-shot on these films", mode="lines",
                                        line={"color": color, "dash": "dot"}))
    figure.update_layout(xaxis_title="films labeled", yaxis_title="on the labeled films, cross-fitted by patient", yaxis_range=[0.4, 1.0],
                         height=380, margin={"t": 30, "b": 40}, legend={"orientation": "h", "y": -0.25})
    return figure


def keep_films(folder: Path, films: list[tuple[str, bytes]]) -> str | None:
    """Writes uploaded or retrieved films into a folder beside the labels (whole or not at all), so adapt reads them again."""
    from zoidberg.runs.files import write_atomically

    for name, data in films:
        target = folder / name
        if data and (not target.exists() or target.read_bytes() != data):
            folder.mkdir(parents=True, exist_ok=True)
            write_atomically(target, lambda path, data=data: path.write_bytes(data))
    return str(folder.resolve()) if folder.is_dir() and any(folder.iterdir()) else None


SOURCES = ("A folder on this server", "Upload films", "From a PACS (DICOMweb)")


def films_source_ui() -> str | None:
    """The site's films: a folder on this server (under the data roots), uploads, or a PACS's studies; None until given.

    Uploads and PACS films are kept in the labels folder (uploads/, pacs/), so that adapt reads them again.
    """
    from zoidberg.adaptation.labeling import default_labels_dir
    from zoidberg.data.roots import check_folder_allowed

    source = st.radio("The site's films", SOURCES, horizontal=True, key="label_source")
    if source == SOURCES[1]:
        uploads = st.file_uploader("Films (PNG, JPEG or DICOM)", type=["png", "jpg", "jpeg", "dcm", "dicom"], accept_multiple_files=True,
                                   key="label_uploads", help="Kept in the labels folder, so that adapt can read them again.")
        return keep_films(default_labels_dir() / "uploads", [(Path(upload.name).name, upload.getvalue()) for upload in uploads or []])
    if source == SOURCES[2]:
        from zoidberg.ui.pacs_source import pacs_inputs_ui

        inputs, _ = pacs_inputs_ui()
        # A PACS film is kept as <SOP Instance UID>.dcm: the file carries its UIDs, and adapt reads it as any film.
        return keep_films(default_labels_dir() / "pacs", [(f"{item.name.rsplit(' · ', 1)[-1]}.dcm", item.data) for item in inputs if item.data])
    typed = st.text_input("Folder of the site's films (read recursively; nothing is written there)", key="label_folder").strip()
    if not typed:
        return None
    try:
        resolved = check_folder_allowed(typed)
    except ValueError as error:
        st.error(str(error))
        return None
    if not resolved.is_dir():
        st.error(f"{typed} is not a folder on this server.")
        return None
    return str(resolved)


def prefetch_next() -> None:
    """Decodes the film after this one now, so that it shows at once after the label."""
    queue = st.session_state.get(QUEUE_KEY, [])
    if len(queue) > 1:
        try:
            display_image(queue[1].file)
        except (OSError, ValueError):
            pass  # It shows its error when its turn comes.
