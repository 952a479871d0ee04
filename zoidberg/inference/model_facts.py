"""Model facts: what the reporting guidelines (GMLP, TRIPOD+AI, CLAIM, HTI-1) ask of a model, read from its run's own files."""

from __future__ import annotations

from zoidberg.inference.decisions import INTENDED_USE
from zoidberg.runs.store import CALIBRATION_FILE, DATA_FILE, MONITOR_REFERENCE_FILE, OPERATING_POINT_FILE, Run, RunStore

INTENDED_USERS = ("ML students and practitioners who train and validate the model, and the clinicians they show it to; "
                  "never a clinician deciding on a patient.")
POPULATION = ("Children aged 1 to 5 years, frontal chest X-rays (PA or AP), as in the pediatric chest X-ray data set of "
              "Kermany et al. (Guangzhou Women and Children's Medical Center) the project's recipes are trained on.")
OUT_OF_SCOPE = (
    "Diagnosis, treatment or triage of any patient: not a medical device, not validated clinically.",
    "Adults, side (lateral) views, other body parts, CT, MR and other modalities: the gate refuses most of them, not all.",
    "A site whose films have not been checked: adapt on the site's labeled films and watch its records (monitor).",
    "Findings other than pneumonia; telling bacterial from viral pneumonia with a binary run.",
)
KNOWN_RISKS = (
    "The gate sees the film, not the patient: an adult film that looks like a child's, or a child's film of another "
    "acquisition, may pass it; a DICOM header that states age and view is read, a PNG or JPEG has none.",
    "Cross-validation on the training source saturates near AUC 0.99 and overstates specificity at a new site by 20 to 45 "
    "points: the figures that hold are those measured on another site's films, and the adapted run's cross-fitted ones.",
    "A threshold chosen on few labels is noisy: its interval is given beside it.",
)
MONITORING_PLAN = (
    "Log every prediction record (serve --records-log, predict --records-log); run `python -m zoidberg monitor` every week "
    "(or open the Monitor page). An alert (refusals, the gate's score, the films' exposure or the model's scores unlike "
    "the site's films, README \"After go-live\") means: stop trusting the answers, check a sample of the week's films, "
    "label them (the Label page) and adapt again."
)


def model_facts(run: Run) -> dict:
    """The model's facts in one place, each from the run's own files (or its parent's, for an adapted run).

    Returns:
        {"intended_use", "intended_users", "population", "out_of_scope", "known_risks", "training_data",
        "selection", "threshold_rule", "evaluations", "adaptation", "gate", "calibration", "monitoring_plan",
        "subgroups", "versions"}.
    """
    store = RunStore(run.path.parent)
    config = run.config or {}
    source = store.get(config["parent"]) if run.kind == "adapt" and config.get("parent") else run
    training = _training_data(source)
    return {
        "intended_use": INTENDED_USE,
        "intended_users": INTENDED_USERS,
        "population": ("Synthetic demo films: no patients, no population; for trying the tool only." if training.get("synthetic")
                       else POPULATION),
        "out_of_scope": list(OUT_OF_SCOPE),
        "known_risks": list(KNOWN_RISKS),
        "training_data": training,
        "selection": _selection(source),
        "threshold_rule": _threshold_rule(run),
        "evaluations": _evaluations(run),
        "adaptation": _adaptation(run) if run.kind == "adapt" else None,
        "gate": _gate(run),
        "calibration": _calibration(run),
        "subgroups": _subgroups(run),
        "monitoring_plan": MONITORING_PLAN,
        "versions": config.get("versions") or {},
    }


def _training_data(run: Run) -> dict:
    data = run.read_json(DATA_FILE) or {}
    duplicates = data.get("duplicates") or {}
    return {
        "folder": data.get("root"), "fingerprint": data.get("fingerprint"), "synthetic": data.get("synthetic"),
        "images": data.get("n_images"), "patients": data.get("n_patients"), "class_counts": data.get("class_counts"),
        "grouping": "by patient: every film of a child lies in one fold",
        "duplicates": {key: duplicates.get(key) for key in ("exact_groups", "exact_images", "near_groups", "near_images", "policy")}
        if duplicates else None,
    }


def _selection(run: Run) -> dict:
    config = run.config or {}
    summary = run.summary() or {}
    members = summary.get("members") or []
    return {
        "validation": f"{config.get('n_splits', '–')}-fold cross-validation grouped by patient, stratified by class",
        "preset": config.get("preset"),
        "kind": run.kind,
        "members": [{"name": member.get("name"), "architecture": member.get("architecture"),
                     "cv_roc_auc": member_cv_auc(RunStore(run.path.parent), member)} for member in members],
        "tuned_by": config.get("tuned_by") or (config.get("trial") or {}).get("tune_run"),
    }


def _threshold_rule(run: Run) -> dict:
    from zoidberg.config import OperatingPointChoice

    point = run.read_json(OPERATING_POINT_FILE) or {}
    choice = point.get("choice")
    return {
        "rule": OperatingPointChoice.from_dict(choice).describe() if choice else (run.summary() or {}).get("threshold_method"),
        "threshold": point.get("threshold", (run.summary() or {}).get("threshold")),
        "probabilities": (choice or {}).get("probabilities", "raw"),
        "chosen_on": "the out-of-fold scores of the films it was validated on"
        + (" (an adapted run: every part's cross-fitted scores of the site's films)" if run.kind == "adapt" else ""),
    }


def _evaluations(run: Run) -> list[dict]:
    from zoidberg.evaluation.stored import current_evaluations

    from zoidberg.evaluation.subgroups import evaluation_subgroups

    facts = []
    for item in current_evaluations(run):
        try:
            subgroups = evaluation_subgroups(run, item)
        except (ValueError, OSError, KeyError):
            subgroups = []
        facts.append({"name": item["name"], "films": item.get("n_images"),
                      **{key: item["metrics"].get(key) for key in ("roc_auc", "accuracy", "sensitivity", "specificity")},
                      "roc_auc_interval": item.get("auc_ci"), "intervals": _evaluation_intervals(run, item), "subgroups": subgroups})
    return facts


def _evaluation_intervals(run: Run, item: dict) -> dict | None:
    """Every headline figure of a stored evaluation with its patient-bootstrap interval, from its predictions.csv."""
    from zoidberg.evaluation.site_figures import site_figures
    from zoidberg.evaluation.stored import read_predictions

    try:
        stored = read_predictions(run, item["name"])
    except (ValueError, OSError, KeyError):
        return None
    if len(stored["class_names"]) != 2 or len(set(stored["labels"].tolist())) < 2:
        return None
    scores = stored["calibrated"] if item.get("scale") == "calibrated" and stored["calibrated"] is not None else stored["raw"]
    figures = site_figures(stored["labels"], scores[:, 1], (scores[:, 1] >= item.get("threshold", 0.5)).astype(int), stored["patients"])
    return {name: {key: figures[name].get(key) for key in ("estimate", "low", "high")}
            for name in ("roc_auc", "accuracy", "sensitivity", "specificity")}


def _adaptation(run: Run) -> dict:
    summary = (run.summary() or {}).get("adaptation") or {}
    config = run.config or {}
    stored = run.read_json("adaptation.json") or {}
    return {
        "parent": config.get("parent"), "parent_name": config.get("parent_name"), "method": config.get("method"),
        "parts": config.get("n_parts"), "site": config.get("labels_file") or config.get("site_dir"),
        "site_fingerprint": config.get("site_fingerprint"), "labels_digest": stored.get("labels_digest"),
        "zero_shot": _figures(summary.get("zero_shot")), "cross_fitted": _figures(summary.get("adapted")),
        "shift": (summary.get("shift") or {}).get("sentence"),
    }


def _figures(block: dict | None) -> dict | None:
    """Estimates with their patient-bootstrap intervals, as the run view shows them."""
    if not block:
        return None
    return {name: {key: (block.get(name) or {}).get(key) for key in ("estimate", "low", "high")}
            for name in ("roc_auc", "accuracy", "sensitivity", "specificity") if block.get(name)}


def _gate(run: Run) -> dict:
    reference = run.read_json(MONITOR_REFERENCE_FILE) or {}
    return {
        "rule": "refused above the 99.5th percentile of the training films' out-of-fold scores (thumbnail stage), then the "
                "frozen features' stage where the run has one; a DICOM header that names another view, body part, modality "
                "or an adult refuses first",
        "refused_of_training_films": 0.005,
        "refused_of_site_films": reference.get("refused_share"),
        "measured": "BENCHMARKS.md, \"What the gate refuses\": the rates by kind of image on the out-of-distribution sample",
    }


def _calibration(run: Run) -> dict | None:
    stored = run.read_json(CALIBRATION_FILE) or {}
    if not stored:
        return None
    out_of_fold = stored.get("out_of_fold") or {}
    return {
        "method": (stored.get("calibration") or {}).get("method"), "fitted_on": stored.get("fitted_on"), "films": stored.get("n"),
        "ece_raw": (out_of_fold.get("raw") or {}).get("ece"), "ece_calibrated": (out_of_fold.get("calibrated") or {}).get("ece"),
    }


def _subgroups(run: Run) -> list[dict]:
    """The out-of-fold decisions by subgroup, where the data names them (zoidberg.evaluation.subgroups); [] when it cannot."""
    from zoidberg.evaluation.subgroups import run_subgroups

    try:
        return run_subgroups(run)
    except (ValueError, OSError):
        return []


def member_cv_auc(store: RunStore, member: dict) -> float | None:
    """A member's cross-validation AUC as the run view shows it: the mean over its folds, from the member's own summary."""
    try:
        summary = store.get(member["run_id"]).summary() or {}
    except (KeyError, ValueError, OSError):
        return member.get("roc_auc")
    mean = ((summary.get("mean_std") or {}).get("roc_auc") or {}).get("mean")
    return member.get("roc_auc") if mean is None else float(mean)
