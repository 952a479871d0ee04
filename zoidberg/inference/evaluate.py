"""Evaluating a finished (or stopped) run on a labeled folder, stored inside the run as evaluations/<name>/."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from zoidberg.data.duplicates import file_digests
from zoidberg.evaluation.leakage import describe_leakage, leakage_check, refuse_adaptation_films
from zoidberg.evaluation.stored import evaluation_name, rescore_evaluation, store_evaluation, summarize_scores, write_evaluation_predictions
from zoidberg.inference.gate import gate_check
from zoidberg.runs.store import (
    EVALUATION_FILE,
    EVALUATIONS_DIR,
    Run,
    now_iso,
    validate_evaluation_name,
    write_json_atomic,
)

Reporter = Callable[[str], None]
SPLITS = ("auto", "test", "all")


def evaluation_rows(dataset, split: str) -> tuple[np.ndarray, str]:
    """The dataset rows an evaluation scores, and the split they are.

    Args:
        dataset: The loaded folder.
        split: "test" (its test split), "all" (every image) or "auto" (the test split when
            the folder has one, else every image).

    Raises:
        ValueError: For an unknown split, or "test" on a folder without a test split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}.")
    if split == "auto":
        split = "test" if dataset.has_test_split else "all"
    if split == "test":
        if not dataset.has_test_split:
            raise ValueError(f"{dataset.root} has no test/ folder; evaluate --split all to score every image.")
        return dataset.test_indices(), "test"
    return np.arange(len(dataset)), "all"


def evaluate_run(
    run: Run,
    data_dir: str | os.PathLike,
    *,
    split: str = "auto",
    name: str | None = None,
    force: bool = False,
    report: Reporter | None = None,
    dataset=None,
    ensemble=None,
    tta: bool | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    other_site: bool | None = None,
) -> dict:
    """Evaluates a run's fold ensemble on a labeled folder and stores the result inside the run.

    The folder is read at the run's image size and label mode (resized as in training).
    Before scoring, the images are checked against the run's training data for shared
    patients and byte-identical files. Evaluating the same folder again reuses the stored
    result unless `force`; a changed operating point is re-scored from the stored
    probabilities without a network pass.

    Args:
        run: A run with at least one fold model.
        data_dir: The labeled folder (Kaggle or flat layout).
        split: "auto", "test" or "all" (see evaluation_rows).
        name: The evaluation's name (default: from the folder and split).
        force: Score again even when a matching evaluation is stored.
        report: Receives one-line progress messages.
        dataset: The loaded folder, when the caller has it (end of cross-validation).
        ensemble: The loaded fold ensemble, when the caller has it.
        tta: Average test-time variants (default: the run's own setting); an evaluation
            stored with the other setting is scored again.
        progress: Called as progress(task, done, total) while loading ("Loading images")
            and scoring ("Scoring").
        other_site: The user states the folder comes from another site, so a file-name patient
            number matching a training patient names another child (None: as stored, else no).

    Returns:
        The evaluation (also written to evaluations/<name>/evaluation.json).

    Raises:
        ValueError: The folder cannot be read as a dataset in the run's label mode, has
            no readable images, or the run has no fold model.
    """
    from zoidberg.data.dataset import load_dataset
    from zoidberg.inference.loading import load_ensemble

    say = report or (lambda message: None)
    from zoidberg.config import DataConfig, from_mapping

    config = run.checked_config() if run.kind == "cv" else run.config
    # The run's own size, label mode and preprocessing: images are prepared as in training.
    data = from_mapping(DataConfig, config.get("data") or {})
    start = time.perf_counter()
    if dataset is None:
        say(f"Loading {data_dir} at {data.image_size} px ({data.label_mode}) ...")
        dataset = load_dataset(data_dir, **data.loader_options(), purpose="evaluation",
                               progress=(lambda done, total: progress("Loading images", done, total)) if progress else None)
    rows, split = evaluation_rows(dataset, split)
    if len(rows) == 0:
        raise ValueError(f"{dataset.root} has no readable images to evaluate in its {split} split.")
    name = validate_evaluation_name(name) if name else evaluation_name(dataset.root, split)
    ensemble = ensemble or load_ensemble(run.id, runs_dir=run.path.parent)
    signature = ensemble.signature()
    tta = ensemble.tta if tta is None else bool(tta)
    choice = (ensemble.operating_point or {}).get("choice") or {}
    prevalence = choice.get("prevalence")
    existing = run.read_json(f"{EVALUATIONS_DIR}/{name}/{EVALUATION_FILE}")
    same_data = bool(existing) and existing.get("fingerprint") == dataset.fingerprint and existing.get("split") == split
    same_scoring = bool(existing) and existing.get("models_signature") == signature and bool(existing.get("tta", False)) == tta
    if same_data and same_scoring and not force:
        stated = (existing.get("leakage") or {}).get("other_site", False)
        if other_site is not None and bool(other_site) != stated and isinstance(existing.get("leakage"), dict):
            # Where the folder comes from changes the leakage sentence only: nothing is scored again.
            existing = {**existing, "leakage": {**existing["leakage"], "other_site": bool(other_site)}}
            write_json_atomic(run.evaluation_path(name, EVALUATION_FILE), existing)
            say(f"Evaluation {name}: the folder is now stated to come from {'another' if other_site else 'the training'} site.")
        if existing.get("threshold") == ensemble.threshold and existing.get("scale") == ensemble.scale:
            say(f"Evaluation {name} is stored for these models and this folder: reused (--force scores again).")
            return existing
        say(f"Evaluation {name}: the operating point changed; re-scoring the stored probabilities.")
        updated = {
            **existing,
            **rescore_evaluation(run, name, ensemble.threshold, ensemble.scale, prevalence),
            "threshold": ensemble.threshold,
            "scale": ensemble.scale,
            "operating_point": choice,
            "rescored": now_iso(),
        }
        write_json_atomic(run.evaluation_path(name, EVALUATION_FILE), updated)
        return updated
    digests = file_digests(dataset.root, [dataset.paths[row] for row in rows])
    refuse_adaptation_films(run, digests)
    leakage = leakage_check(run, dataset, rows, digests, other_site=bool(other_site))
    for line in describe_leakage(leakage):
        say(f"Warning: {line}")
    how = " (backbone features once per image)" if ensemble.frozen and not tta else ""
    if tta:
        from zoidberg.inference.tta import TTA_VARIANTS

        how = f" and test-time augmentation ({len(TTA_VARIANTS)} variants per image, {len(TTA_VARIANTS)}x the forward passes)"
    say(f"Scoring {len(rows)} images with {ensemble.describe_models()}{how} ...")
    scoring_start = time.perf_counter()
    per_fold = ensemble.score_dataset(dataset, rows, tta=tta, progress=(lambda done, total: progress("Scoring", done, total)) if progress else None)
    scoring_seconds = time.perf_counter() - scoring_start
    raw, calibrated = ensemble.combine(per_fold)
    gate = gate_check(ensemble, dataset, rows)
    gate_scores = gate.pop("scores")
    if gate["n_flagged"]:
        say(f"Warning: {gate['n_flagged']} of {len(rows)} images look unlike the training films (the gate refuses them in predict): "
            + ", ".join(item["path"] for item in gate["flagged"][:5]) + (" ..." if gate["n_flagged"] > 5 else ""))
    elif not gate["checked"]:
        say(f"Unchecked: {gate['note']}")
    labels = dataset.labels[rows]
    class_names = list(ensemble.class_names)
    figures = summarize_scores(
        labels, raw, calibrated, dataset.patients[rows].astype(str), class_names,
        threshold=ensemble.threshold, scale=ensemble.scale, prevalence=prevalence,
    )
    in_use = calibrated if ensemble.scale == "calibrated" and calibrated is not None else raw
    decided = (in_use[:, 1] >= ensemble.threshold).astype(int) if len(class_names) == 2 else in_use.argmax(axis=1)
    shift = None
    if len(class_names) == 2:
        from zoidberg.evaluation.shift import measure_shift

        shift = measure_shift(ensemble, dataset, rows, calibrated_positive=None if calibrated is None else calibrated[:, 1],
                              stated_prevalence=float(np.mean(labels == 1)))
        say(f"Shift check: {shift['sentence']}")
    n_splits = int(config.get("n_splits") or len(ensemble.folds)) if run.kind == "cv" else len(ensemble.folds)
    notes = []
    if len(ensemble.folds) < n_splits:
        notes.append(
            f"The run {run.state} after {len(ensemble.folds)} of {n_splits} folds: these figures are those of the "
            f"ensemble of folds {', '.join(map(str, ensemble.folds))}."
        )
    if figures["one_class"]:
        notes.append(
            f"This folder holds images of one class only ({class_names[int(labels[0])]}): AUC, its interval and "
            "the ROC curve are undefined; accuracy, sensitivity or specificity and calibration still hold."
        )
    evaluation = {
        "name": name,
        "created": now_iso(),
        "data_dir": str(dataset.root),
        "split": split,
        "fingerprint": dataset.fingerprint,
        "synthetic": bool(dataset.synthetic),
        "class_names": class_names,
        "n_images": int(len(rows)),
        "n_patients": int(len(np.unique(dataset.patients[rows]))),
        "class_counts": dataset.class_counts(rows),
        "folds_used": list(ensemble.folds),
        "n_splits": n_splits,
        "models_signature": signature,
        "models": ensemble.describe_models(),
        "tta": tta,
        "scoring_seconds": round(scoring_seconds, 2),
        "threshold": ensemble.threshold,
        "scale": ensemble.scale,
        "operating_point": choice,
        **figures,
        "leakage": leakage,
        "shift": shift,
        "out_of_distribution": gate,
        "skipped": [{"path": item.path, "reason": item.reason} for item in dataset.skipped],
        "notes": notes,
        "seconds": round(time.perf_counter() - start, 2),
    }
    store_evaluation(run, name, evaluation, lambda path: write_evaluation_predictions(path, dataset, rows, labels, raw, calibrated, decided, per_fold, class_names, gate_scores))
    headline = evaluation["metrics"]
    auc = headline.get("roc_auc")
    say(
        f"Evaluation {name}: {len(rows)} images, accuracy {headline['accuracy']:.3f}"
        + (f", AUC {auc:.3f}" if auc is not None and np.isfinite(auc) else ", AUC undefined (one class)")
        + f" in {evaluation['seconds']:.1f} s"
    )
    return evaluation
