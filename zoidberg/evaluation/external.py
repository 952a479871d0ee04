"""Evaluating a finished (or stopped) run on a labeled folder, stored inside the run as evaluations/<name>/."""

from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

from zoidberg.evaluation import metrics
from zoidberg.data.duplicates import file_digests
from zoidberg.evaluation.calibration import calibration_summary
from zoidberg.evaluation.gate import gate_check
from zoidberg.evaluation.operating import DECISION_CURVE_THRESHOLDS, net_benefit, predictive_values
from zoidberg.evaluation.statistics import bootstrap_interval
from zoidberg.runs.store import (
    ADAPTATION_FILE,
    DATA_FILE,
    EVALUATION_FILE,
    EVALUATIONS_DIR,
    FOLDS_FILE,
    HASHES_FILE,
    OPERATING_POINT_FILE,
    PREDICTIONS_FILE,
    Run,
    now_iso,
    validate_evaluation_name,
    write_json_atomic,
)

Reporter = Callable[[str], None]
SPLITS = ("auto", "test", "all")
HISTOGRAM_BINS = 20
# How many shared patients or identical files an evaluation lists by name.
LISTED = 20


def evaluation_name(data_dir: str | os.PathLike, split: str) -> str:
    """The default name of an evaluation: the folder's name, plus "-test" for its test split."""
    base = re.sub(r"[^A-Za-z0-9_\-]+", "-", Path(data_dir).expanduser().resolve().name).strip("-_") or "external"
    return validate_evaluation_name((base + ("-test" if split == "test" else ""))[:80])


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


def training_patients(run: Run) -> set[str]:
    """The patient ids of the images the run's folds trained and validated on (from folds.csv)."""
    try:
        with run.open_text(FOLDS_FILE) as handle:
            return {row["patient"] for row in csv.DictReader(handle)}
    except (OSError, KeyError):
        return set()


def training_digests(run: Run) -> dict[str, str]:
    """{SHA-256: path} of the run's training images: hashes.json, or read again from the data folder."""
    stored = run.read_json(HASHES_FILE)
    if stored:
        return {digest: path for path, digest in stored.items() if digest}
    data = run.read_json(DATA_FILE) or {}
    root = data.get("root")
    try:
        with run.open_text(FOLDS_FILE) as handle:
            paths = [row["path"] for row in csv.DictReader(handle)]
    except (OSError, KeyError):
        return {}
    if not root or not Path(root).is_dir():
        return {}
    return {digest: path for path, digest in zip(paths, file_digests(root, paths)) if digest}


def leakage_check(run: Run, dataset, rows: np.ndarray, digests: list[str]) -> dict:
    """What the evaluated images share with the run's training data: patient ids and byte-identical files.

    Returns:
        {"shared_patients", "n_shared_patients", "identical_files", "n_identical_files", "clean"}.
    """
    patients = training_patients(run)
    shared = sorted({str(dataset.patients[row]) for row in rows} & patients)
    trained = training_digests(run)
    identical = [
        {"file": dataset.paths[row], "training_file": trained[digest]}
        for row, digest in zip(rows, digests)
        if digest and digest in trained
    ]
    return {
        "shared_patients": shared[:LISTED],
        "n_shared_patients": len(shared),
        "identical_files": identical[:LISTED],
        "n_identical_files": len(identical),
        "clean": not shared and not identical,
    }


def refuse_adaptation_films(run: Run, digests: list[str]) -> None:
    """Refuses to score an adapted run on films its site heads learned from: those figures would be leakage.

    Raises:
        ValueError: Naming how many films, and where the honest figures are.
    """
    if run.kind != "adapt":
        return
    seen = set((run.read_json(ADAPTATION_FILE) or {}).get("site_digests") or ())
    shared = sum(1 for digest in digests if digest and digest in seen)
    if shared:
        raise ValueError(
            f"{shared} of these {len(digests)} films are films adapted run {run.id} learned from (its site folder): scored "
            "here they would be leakage. Its honest figures on them are the cross-fitted ones in its summary "
            "(`python -m zoidberg runs`, or the run view); evaluate it on other films of the site."
        )


def describe_leakage(leakage: dict) -> list[str]:
    """Console and page lines for a leakage check (none when clean)."""
    lines = []
    if leakage["n_shared_patients"]:
        lines.append(
            f"{leakage['n_shared_patients']} patient(s) of this folder are in the run's training data "
            f"(e.g. {', '.join(leakage['shared_patients'][:5])}): their images were seen in training, so the "
            "scores are optimistic."
        )
    if leakage["n_identical_files"]:
        example = leakage["identical_files"][0]
        lines.append(
            f"{leakage['n_identical_files']} file(s) are byte-identical to training images "
            f"(e.g. {example['file']} = {example['training_file']})."
        )
    return lines


def _curves(labels: np.ndarray, probabilities: np.ndarray, class_names) -> tuple[dict, dict]:
    """ROC and precision-recall curves (binary: of pneumonia; multiclass: one vs rest ROC)."""
    if len(class_names) != 2:
        return metrics.roc_curves_one_vs_rest(labels, probabilities, list(class_names)), {}
    roc = {"pneumonia": metrics.roc_curve_points(labels, probabilities[:, 1])}
    if len(np.unique(labels)) < 2:
        return roc, {}
    precision, recall, _ = precision_recall_curve(labels, probabilities[:, 1])
    keep = np.unique(np.linspace(0, len(precision) - 1, min(len(precision), 200)).astype(int))
    return roc, {"pneumonia": {"precision": precision[keep].tolist(), "recall": recall[keep].tolist()}}


def _auc_interval(labels: np.ndarray, probabilities: np.ndarray, groups: np.ndarray, class_names) -> dict | None:
    """The patient-bootstrap 95 % interval of the (macro) AUC, or None with one class."""
    if len(np.unique(labels)) < 2:
        return None
    if len(class_names) == 2:
        return bootstrap_interval(labels, probabilities[:, 1], groups)

    def macro_auc(sample_labels, sample_rows):
        return float(roc_auc_score(sample_labels, probabilities[sample_rows.astype(int)], multi_class="ovr", average="macro"))

    # The statistic sees row numbers as its "scores", so that it can gather the class columns.
    return bootstrap_interval(labels, np.arange(len(labels), dtype=float), groups, macro_auc)


def score_histogram(labels: np.ndarray, positive: np.ndarray, class_names) -> dict:
    """Counts of the score in HISTOGRAM_BINS equal bins, per true class (shift is seen, not guessed)."""
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    counts = {
        str(name): np.histogram(positive[labels == index], bins=edges)[0].tolist() for index, name in enumerate(class_names)
    }
    return {"edges": edges.tolist(), "counts": counts}


def summarize_scores(
    labels: np.ndarray,
    raw: np.ndarray,
    calibrated: np.ndarray | None,
    groups: np.ndarray,
    class_names,
    *,
    threshold: float,
    scale: str,
    prevalence: float | None,
) -> dict:
    """Every figure of an evaluation that the probabilities alone decide (no network pass).

    Args:
        labels: Class indices of the images.
        raw: (N, C) raw ensemble probabilities.
        calibrated: (N, C) calibrated ones, or None.
        groups: Patient ids, for the bootstrap.
        class_names: Class names in order.
        threshold: The run's threshold on `scale`.
        scale: "raw" or "calibrated".
        prevalence: The stated prevalence for PPV and NPV (None: this folder's own share).
    """
    in_use = calibrated if scale == "calibrated" and calibrated is not None else raw
    binary = len(class_names) == 2
    one_class = len(np.unique(labels)) < 2
    result = {
        "metrics": metrics.to_jsonable(metrics.evaluate_predictions(labels, in_use, class_names, threshold)),
        "auc_ci": _auc_interval(labels, in_use, groups, class_names),
        "one_class": bool(one_class),
        "calibration": {
            "raw": calibration_summary(labels, raw),
            "calibrated": calibration_summary(labels, calibrated) if calibrated is not None else None,
        },
    }
    result["roc"], result["pr"] = _curves(labels, in_use, class_names)
    if binary:
        curve_scores = calibrated[:, 1] if calibrated is not None else raw[:, 1]
        result["decision_curve"] = net_benefit(labels, curve_scores, DECISION_CURVE_THRESHOLDS)
        result["score_histogram"] = score_histogram(labels, in_use[:, 1], class_names)
        sensitivity, specificity = result["metrics"].get("sensitivity"), result["metrics"].get("specificity")
        stated = prevalence if prevalence is not None else float(np.mean(labels == 1))
        ppv, npv = (None, None)
        if sensitivity is not None and specificity is not None and np.isfinite(sensitivity) and np.isfinite(specificity):
            ppv, npv = predictive_values(sensitivity, specificity, stated)
        result["predictive_values"] = {
            "prevalence": stated,
            "source": "stated" if prevalence is not None else "this folder",
            "ppv": ppv,
            "npv": npv,
        }
    return result


def _write_predictions(path: Path, dataset, rows, labels, raw, calibrated, decided, per_fold, class_names, gate_scores=None) -> None:
    """predictions.csv: one row per image with raw and calibrated probabilities, the decision and the gate's verdict."""
    columns = ["path", "patient", "label", "prediction", "correct", "spread"]
    columns += [f"p_raw_{name}" for name in class_names]
    if calibrated is not None:
        columns += [f"p_calibrated_{name}" for name in class_names]
    if gate_scores is not None:
        columns += ["in_distribution", "ood_score"]
    column = 1 if len(class_names) == 2 else None
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for position, row in enumerate(rows):
            predicted = int(decided[position])
            spread_column = column if column is not None else predicted
            values = [
                dataset.paths[row],
                dataset.patients[row],
                class_names[labels[position]],
                class_names[predicted],
                int(predicted == labels[position]),
                f"{per_fold[:, position, spread_column].std():.6f}",
            ]
            values += [f"{value:.6f}" for value in raw[position]]
            if calibrated is not None:
                values += [f"{value:.6f}" for value in calibrated[position]]
            if gate_scores is not None:
                values += [int(gate_scores[position][0]), f"{gate_scores[position][1]:.4f}"]
            writer.writerow(values)


def read_predictions(run: Run, name: str) -> dict:
    """Reads an evaluation's predictions.csv back: labels, raw and calibrated probabilities, paths and patients."""
    import pandas as pd

    frame = pd.read_csv(run.evaluation_path(name, PREDICTIONS_FILE), keep_default_na=False)
    evaluation = run.read_json(f"{EVALUATIONS_DIR}/{name}/{EVALUATION_FILE}") or {}
    class_names = list(evaluation.get("class_names") or [])
    raw = frame[[f"p_raw_{name}" for name in class_names]].to_numpy(dtype=float)
    calibrated_columns = [f"p_calibrated_{name}" for name in class_names]
    calibrated = frame[calibrated_columns].to_numpy(dtype=float) if all(column in frame for column in calibrated_columns) else None
    labels = np.array([class_names.index(value) for value in frame["label"]])
    return {
        "frame": frame,
        "labels": labels,
        "raw": raw,
        "calibrated": calibrated,
        "paths": frame["path"].tolist(),
        "patients": frame["patient"].astype(str).to_numpy(),
        "class_names": class_names,
    }


def rescore_evaluation(run: Run, name: str, threshold: float, scale: str, prevalence: float | None) -> dict:
    """An evaluation's figures at another operating point, from its stored probabilities (no network pass)."""
    stored = read_predictions(run, name)
    return summarize_scores(
        stored["labels"], stored["raw"], stored["calibrated"], stored["patients"], stored["class_names"],
        threshold=threshold, scale=scale, prevalence=prevalence,
    )


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
    leakage = leakage_check(run, dataset, rows, digests)
    for line in describe_leakage(leakage):
        say(f"Warning: {line}")
    how = " (backbone features once per image)" if ensemble.frozen and not tta else ""
    if tta:
        from zoidberg.training.pipeline import TTA_VARIANTS

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
    notes += describe_leakage(leakage)
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
    _store(run, name, evaluation, lambda path: _write_predictions(path, dataset, rows, labels, raw, calibrated, decided, per_fold, class_names, gate_scores))
    headline = evaluation["metrics"]
    auc = headline.get("roc_auc")
    say(
        f"Evaluation {name}: {len(rows)} images, accuracy {headline['accuracy']:.3f}"
        + (f", AUC {auc:.3f}" if auc is not None and np.isfinite(auc) else ", AUC undefined (one class)")
        + f" in {evaluation['seconds']:.1f} s"
    )
    return evaluation


def _store(run: Run, name: str, evaluation: dict, write_predictions: Callable[[Path], None]) -> None:
    """Writes an evaluation folder next to the others and renames it into place, whole or not at all."""
    parent = run.path / EVALUATIONS_DIR
    parent.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    try:
        write_predictions(staging / PREDICTIONS_FILE)
        write_json_atomic(staging / EVALUATION_FILE, evaluation)
        target = parent / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def latest_external(run: Run) -> dict | None:
    """The newest evaluation that is not the run's own test split, or None."""
    external = [item for item in run.evaluations() if item.get("name") != "test"]
    return external[-1] if external else None


def current_evaluations(run: Run) -> list[dict]:
    """The run's evaluations, each at the run's current operating point (re-scored in memory when it changed)."""
    point = run.read_json(OPERATING_POINT_FILE)
    evaluations = []
    for evaluation in run.evaluations():
        if point and (evaluation.get("threshold") != point["threshold"] or evaluation.get("scale") != point["choice"].get("probabilities")):
            try:
                scale = point["choice"].get("probabilities", "raw")
                evaluation = {
                    **evaluation,
                    **rescore_evaluation(run, evaluation["name"], point["threshold"], scale, point["choice"].get("prevalence")),
                    "threshold": point["threshold"],
                    "scale": scale,
                }
            except (OSError, ValueError, KeyError):
                pass  # Shown as stored, at the threshold it names.
        evaluations.append(evaluation)
    return evaluations
