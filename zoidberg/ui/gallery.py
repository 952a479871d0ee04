"""The run view's error gallery: the X-rays a run gets wrong, most wrong first, with Grad-CAM on demand."""

from __future__ import annotations

import streamlit as st

from zoidberg.evaluation.errors import ERROR_KINDS, ScoredImage, ScoredSet, evaluation_images, out_of_fold_images
from zoidberg.runs.store import Run
from zoidberg.ui.widgets import escape_markdown

PER_PAGE = 12
COLUMNS = 4
THUMBNAIL_SIDE = 256


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail(path: str, mtime_ns: int) -> bytes | None:
    """A JPEG thumbnail of an image file (None when it cannot be read), cached by path and modification time."""
    import io

    from PIL import Image

    from zoidberg.data.imaging import ImageDecodeError, decode_grayscale

    del mtime_ns  # Only part of the cache key.
    try:
        gray = decode_grayscale(path, draft_size=THUMBNAIL_SIDE)
    except (ImageDecodeError, OSError):
        return None
    image = Image.fromarray(gray)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _scored_sets(run: Run, evaluations: list[dict]) -> dict[str, ScoredSet]:
    """{source label: scored images}: out of fold first, then every evaluation whose predictions are stored."""
    sets = {}
    try:
        sets["out-of-fold"] = out_of_fold_images(run)
    except (ValueError, OSError):
        pass
    for evaluation in evaluations:
        try:
            sets[f"evaluation: {evaluation['name']}"] = evaluation_images(run, evaluation)
        except (ValueError, OSError, KeyError):
            continue
    return sets


def gallery_ui(run: Run, evaluations: list[dict]) -> None:
    """Draws the gallery: the source, the kind of mistake (or a confusion cell), then a page of images."""
    sets = _scored_sets(run, evaluations)
    if not sets:
        st.caption("The gallery needs the run's out-of-fold predictions (a completed run) or a stored evaluation.")
        return
    left, middle, right = st.columns([1.4, 1.4, 1])
    source = left.selectbox("Images", list(sets), key=f"gallery_source_{run.id}",
                            help="Out-of-fold: every pooled image, scored by the fold model that never saw it.")
    scored = sets[source]
    binary = len(scored.class_names) == 2
    cells = [f"true {true} → predicted {predicted}" for true in scored.class_names for predicted in scored.class_names if true != predicted]
    options = (list(ERROR_KINDS) if binary else ["all errors"]) + cells
    choice = middle.selectbox("Show", options, key=f"gallery_kind_{run.id}",
                              help="A kind of mistake at the run's operating point, or one off-diagonal cell of the confusion matrix.")
    if choice in cells:
        true, predicted = choice.removeprefix("true ").split(" → predicted ")
        images = scored.select(cell=(true, predicted))
    else:
        images = scored.select(choice)
    pages = max(1, -(-len(images) // PER_PAGE))
    page = right.number_input("Page", 1, pages, 1, key=f"gallery_page_{run.id}_{source}_{choice}") if pages > 1 else 1
    threshold = f" at threshold {scored.threshold:.3f}" if scored.threshold is not None else ""
    st.caption(f"{len(images)} image(s){threshold}, most wrong first (the cross-entropy of the true class).")
    shown = images[(page - 1) * PER_PAGE : page * PER_PAGE]
    for start in range(0, len(shown), COLUMNS):
        for column, image in zip(st.columns(COLUMNS), shown[start : start + COLUMNS]):
            with column:
                _card(run, image, binary)


def _card(run: Run, image: ScoredImage, binary: bool) -> None:
    """One image: thumbnail (or Grad-CAM), what it is and what the run said."""
    import os

    key = f"gallery_cam_{run.id}_{image.path}"
    try:
        mtime = os.stat(image.path).st_mtime_ns
    except OSError:
        st.caption(f"{escape_markdown(os.path.basename(image.path))}: the file is no longer there.")
        return
    if st.session_state.get(key):
        overlay = gradcam_overlay(run, image.path)
        st.image(overlay if overlay is not None else thumbnail(image.path, mtime), width="stretch")
    else:
        picture = thumbnail(image.path, mtime)
        if picture is None:
            st.caption("Cannot be read as an image.")
        else:
            st.image(picture, width="stretch")
    what = f"P(pneumonia) {image.probability:.3f}" if binary else f"P({image.predicted}) {image.probability:.3f}"
    fold = f" · fold {image.fold}" if image.fold else ""
    st.caption(f"**{image.label} → {image.predicted}** · {what}{fold} · patient {escape_markdown(image.patient)} · "
               f"{escape_markdown(os.path.basename(image.path))}")
    st.toggle("Grad-CAM", key=key)


def gradcam_overlay(run: Run, path: str):
    """The ensemble's Grad-CAM of the predicted class over the image (RGB), or None when it cannot be made."""
    from zoidberg.data.imaging import ImageDecodeError, decode_grayscale
    from zoidberg.inference.explain import gradcam_overlay as overlay_of
    from zoidberg.ui import predict_results, state

    try:
        ensemble = predict_results.load_ensemble_cached(state.run_store(), run)
        return overlay_of(ensemble, decode_grayscale(path, draft_size=ensemble.image_size), THUMBNAIL_SIDE)
    except (ImageDecodeError, OSError, ValueError) as error:
        st.caption(f"Grad-CAM unavailable: {escape_markdown(str(error))}")
        return None
