"""Where the model looks: the share of its Grad-CAM evidence inside the lung fields, measured on films, films flagged when it lies outside."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from zoidberg.runs.files import write_json_atomic
from zoidberg.runs.store import ATTENTION_FILE, Run

# The lung fields as a fixed box (x0, y0, x1, y1, as shares of the width and height), read off the mean
# of the 5,232 Kermany training films: the lungs span about 15-85 % of the width, from the
# apices at 12 % to the diaphragm at 78 % of the height. The "R" marker, the neck, the arms and
# the abdomen lie outside. A box is crude (each child's lungs sit a little differently), so
# the check speaks of shares over many films, and flags a film only when most evidence is outside.
LUNG_BOX = (0.15, 0.12, 0.85, 0.78)
# A film whose share of evidence inside the box is below this is flagged.
OUTSIDE_SHARE = 0.5
# Films measured per source by default: a fixed sample keeps the check under a minute for `best`.
DEFAULT_SAMPLE = 200
# How many flagged films a stored check names.
LISTED = 20
Progress = Callable[[int, int], None]


def lung_share(heatmap: np.ndarray, box: tuple[float, float, float, float] = LUNG_BOX) -> float | None:
    """The share of a Grad-CAM map's mass inside the lung box; None for an empty map (no evidence anywhere)."""
    heatmap = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)
    total = heatmap.sum()
    if not np.isfinite(total) or total <= 0:
        return None
    height, width = heatmap.shape[:2]
    x0, y0, x1, y1 = box
    inside = heatmap[round(y0 * height):round(y1 * height), round(x0 * width):round(x1 * width)].sum()
    return float(inside / total)


def describe_share(share: float | None) -> str | None:
    """A Predict card's line for one film, or None when the evidence lies mostly in the lungs."""
    if share is None or share >= OUTSIDE_SHARE:
        return None
    return (f"Most of the evidence lies outside the lung fields ({share:.0%} inside): the model may be looking at a "
            "marker, the neck or the abdomen. Do not trust this call.")


def measure_attention(ensemble, scored, *, sample: int = DEFAULT_SAMPLE, seed: int = 0, progress: Progress | None = None) -> dict:
    """Measures the Grad-CAM share inside the lung box on (a sample of) a scored set's films.

    Args:
        ensemble: The loaded run.
        scored: An evaluation.errors.ScoredSet (out-of-fold films, or an evaluation's).
        sample: Films to measure at most (a fixed random sample when there are more).
        seed: The sample's seed.
        progress: Called as progress(done, total).

    Returns:
        {"source", "box", "outside_share", "n_films", "n_measured", "median_share", "mean_share",
        "n_outside", "share_outside", "outside": [{"path", "share", "label", "predicted"}], "unreadable"}.
    """
    from zoidberg.data.imaging import ImageDecodeError, decode_grayscale

    images = list(scored.images)
    if len(images) > sample:
        chosen = np.sort(np.random.default_rng(seed).choice(len(images), size=sample, replace=False))
        images = [images[index] for index in chosen]
    shares, outside, unreadable = [], [], 0
    for done, image in enumerate(images, start=1):
        try:
            model_input = ensemble.resized(decode_grayscale(image.path, draft_size=ensemble.image_size))
        except (ImageDecodeError, OSError):
            unreadable += 1
            continue
        class_index = ensemble.decide(ensemble.probabilities(model_input)).class_index
        share = lung_share(ensemble.gradcam(model_input, class_index))
        if share is not None:
            shares.append(share)
            if share < OUTSIDE_SHARE:
                outside.append({"path": image.path, "share": round(share, 3), "label": image.label, "predicted": image.predicted})
        if progress:
            progress(done, len(images))
    outside.sort(key=lambda item: item["share"])
    return {
        "source": scored.source,
        "box": list(LUNG_BOX),
        "outside_share": OUTSIDE_SHARE,
        "n_films": len(scored.images),
        "n_measured": len(shares),
        "median_share": float(np.median(shares)) if shares else None,
        "mean_share": float(np.mean(shares)) if shares else None,
        "n_outside": len(outside),
        "share_outside": len(outside) / len(shares) if shares else None,
        "outside": outside[:LISTED],
        "unreadable": unreadable,
    }


def attention_sentence(check: dict) -> str:
    """The run view's and the report's sentence for one stored check."""
    if not check.get("n_measured"):
        return f"{check['source']}: no film could be measured."
    sampled = f" (a sample of {check['n_measured']} of {check['n_films']})" if check["n_measured"] < check["n_films"] else ""
    return (
        f"{check['source']}: on {check['n_measured']} films{sampled}, a median {check['median_share']:.0%} of the Grad-CAM "
        f"evidence lies inside the lung fields; {check['n_outside']} film(s) ({check['share_outside']:.0%}) have most of it "
        "outside (a marker, the neck, the arms or the abdomen), a known shortcut on this data."
    )


def attention_path(run: Run, evaluation_name: str | None = None):
    """Where a check is stored: the run's folder for out-of-fold films, the evaluation's folder for an evaluation."""
    return run.path / ATTENTION_FILE if evaluation_name is None else run.evaluation_path(evaluation_name, ATTENTION_FILE)


def measure_and_store(run: Run, ensemble, evaluation: dict | None = None, *, sample: int = DEFAULT_SAMPLE, progress: Progress | None = None) -> dict:
    """Measures out-of-fold films (evaluation None) or an evaluation's films, and stores the check in the run."""
    from zoidberg.evaluation.errors import evaluation_images, out_of_fold_images

    scored = out_of_fold_images(run) if evaluation is None else evaluation_images(run, evaluation)
    check = measure_attention(ensemble, scored, sample=sample, progress=progress)
    write_json_atomic(attention_path(run, None if evaluation is None else evaluation["name"]), check)
    return check


def stored_checks(run: Run, evaluations: list[dict]) -> list[dict]:
    """The stored checks: out-of-fold first, then each evaluation's, where measured."""
    from zoidberg.runs.files import read_json

    paths = [attention_path(run)] + [attention_path(run, item["name"]) for item in evaluations]
    return [check for check in (read_json(path) for path in paths) if isinstance(check, dict)]
