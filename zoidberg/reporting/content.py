"""What a run's report says: its sections, tables, figures and misclassified examples, read from the run store."""

from __future__ import annotations

import itertools
import logging
import os

from zoidberg.inference.decisions import INTENDED_USE
from zoidberg.evaluation.gap import CV_COLUMN, gap_table
from zoidberg.evaluation.leakage import evaluation_notes
from zoidberg.evaluation.operating import SAME_FILMS_ASSUMPTION, rates_to_read
from zoidberg.reporting.document import Example, Report, Section, Table
from zoidberg.reporting.numbers import estimate as _estimate, interval as _interval, number, percent
from zoidberg.runs.store import CALIBRATION_FILE, DATA_FILE, MODEL_KINDS, OPERATING_POINT_FILE, Run, RunStore, now_iso

logger = logging.getLogger(__name__)

LIMITS = (
    "Cross-validation figures come from out-of-fold predictions on the training data's own hospital and scanners; they "
    "overestimate what new patients will see. The external evaluations below, on images the run never trained on, are "
    "the better guide, and even they hold only for data like theirs.",
    "The model sees one frontal film at a time, without history, age or other views, and says only normal or pneumonia "
    "(or the run's classes): it cannot rule out other findings.",
    "Predictive values depend on prevalence: they are given at the stated prevalence and change with it.",
)
# How many misclassified X-rays the report shows, and how large.
DEFAULT_EXAMPLES = 6
EXAMPLE_SIDE = 320
# The figures of CV mean ± std, in this order.
CV_METRICS = (("roc_auc", "AUC"), ("accuracy", "Accuracy"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
              ("precision", "PPV (precision)"), ("f1", "F1"), ("balanced_accuracy", "Balanced accuracy"))


def intended_use_section() -> Section:
    """Intended use, the not-a-medical-device notice and the limits."""
    return Section("Intended use and limits", [INTENDED_USE, *LIMITS])


def data_section(run: Run) -> Section:
    """Counts per class, patients, skipped files and duplicates of the data the run trained on."""
    data = run.read_json(DATA_FILE) or {}
    config_data = run.config.get("data") or {}
    section = Section("The data")
    counts = data.get("class_counts") or {}
    section.paragraphs.append(
        f"Folder {data.get('root') or config_data.get('data_dir', '–')} (fingerprint {data.get('fingerprint') or run.config.get('data_fingerprint', '–')})"
        + (": the SYNTHETIC demo data set, not X-rays." if data.get("synthetic") else ".")
    )
    if counts:
        total = sum(counts.values())
        section.tables.append(Table(["Class", "Images", "Share"], [[name, str(count), percent(count / total if total else None)] for name, count in counts.items()]
                                    + [["All", str(total), "100 %"]], f"{data.get('n_patients', '–')} patients" + (f"; {data['n_test']} images in a test split, scored once at the end." if data.get("n_test") else ".")))
    skipped = data.get("skipped") or []
    section.paragraphs.append(f"Skipped files: {len(skipped)}." + ("" if not skipped else " First: " + "; ".join(
        f"{os.path.basename(str(item.get('path', item))) if isinstance(item, dict) else os.path.basename(str(item))}"
        + (f" ({item.get('reason')})" if isinstance(item, dict) and item.get("reason") else "") for item in skipped[:5]) + "."))
    duplicates = data.get("duplicates") or {}
    if duplicates:
        section.paragraphs.append(
            f"Duplicates found: {duplicates.get('exact_groups', 0)} groups of byte-identical images ({duplicates.get('exact_images', 0)} images), "
            f"{duplicates.get('near_groups', 0)} groups of near-identical ones ({duplicates.get('near_images', 0)} images); "
            f"{duplicates.get('crossing_patients', 0)} groups cross patients. Policy: {duplicates.get('policy', '–')} "
            "(kept in one fold, so that no copy is scored by a model that trained on it)."
        )
    return section


def method_section(run: Run) -> Section:
    """Folds by patient, architecture, preset, preprocessing, calibration and operating point choice."""
    config = run.config
    summary = run.summary() or {}
    model = config.get("model") or {}
    train = config.get("train") or {}
    data = config.get("data") or {}
    section = Section("The method")
    if run.kind == "adapt":
        section.paragraphs.append(
            f"Run {config.get('parent')} adapted to the site's own labeled films: site heads on its outputs"
            + (" and frozen ImageNet features" if config.get("method") == "head" else "")
            + f", cross-fitted by patient in {config.get('n_parts', '–')} parts. Each part of the site's films is scored, and its "
            "threshold chosen, by heads fitted on the other parts only; the figures below labelled cross-validation are those "
            "cross-fitted scores of the site's films."
        )
    else:
        section.paragraphs.append(
            f"{config.get('n_splits', '–')}-fold cross-validation grouped by patient: every X-ray of a child lies in one fold, "
            "so each fold is scored by a model that never saw that patient. Folds are stratified by class."
        )
    rows = [["Run", f"{run.name} ({run.id})"], ["Kind", run.kind]]
    if config.get("preset"):
        rows.append(["Preset", str(config["preset"])])
    if run.kind == "adapt":
        adaptation = summary.get("adaptation") or {}
        method = {"head": "site heads", "recalibrate": "a recalibration of the parent's scores"}.get(config.get("method"), str(config.get("method")))
        rows.append(["Adapted from", f"{adaptation.get('parent_name') or ''} ({config.get('parent')})"])
        rows.append(["Site", f"{config.get('labels_file') or config.get('site_dir')}: {(adaptation.get('adapted') or {}).get('n', '–')} "
                     f"labeled films, {method} cross-fitted by patient in {config.get('n_parts')} parts"])
    elif run.kind == "ensemble":
        members = summary.get("members") or []
        rows.append(["Combination", f"{summary.get('method', '–')} of {len(members)} runs"])
        from zoidberg.inference.model_facts import member_cv_auc

        store = RunStore(run.path.parent)
        # The CV AUC the run view shows: the mean over each member's folds.
        rows += [[f"Member {index}", f"{member.get('name')} · {member.get('architecture')} at {member.get('image_size')} px · CV AUC "
                  f"{number(member_cv_auc(store, member))} (mean over folds)"] for index, member in enumerate(members, start=1)]
    else:
        from zoidberg.options.registry import ARCHITECTURES

        spec = ARCHITECTURES.get(model.get("architecture"))
        used = spec.hyperparameter_names if spec else ()
        hyper = ", ".join(f"{name} {model[name]}" for name in used if name in model)
        rows.append(["Architecture", f"{spec.label if spec else model.get('architecture', '–')}" + (f" ({hyper})" if hyper else "")])
        rows.append(["Training", ", ".join(f"{key} {value}" for key, value in sorted(train.items()) if not isinstance(value, (dict, list))) or "–"])
    rows.append(["Images", f"{data.get('image_size', '–')} px, {data.get('label_mode', 'binary')}, resize {data.get('resize', 'stretch')}, contrast {data.get('enhance', 'none')}"])
    rows.append(["Calibration", f"{config.get('calibration_method', '–')}, fitted on out-of-fold predictions"])
    rows.append(["Test-time augmentation", "yes" if config.get("tta") else "no"])
    section.tables.append(Table(["", ""], rows))
    return section


def results_section(run: Run, evaluations: list[dict]) -> Section:
    """CV mean ± std per metric, every external evaluation with its AUC interval, and the gap between them."""
    summary = run.summary() or {}
    section = Section("Results")
    adaptation = summary.get("adaptation") or {}
    if adaptation.get("adapted"):
        # The run view's figures: the site's films, pooled, each with its patient-bootstrap interval.
        blocks = (("Zero-shot (the parent at its own threshold)", adaptation.get("zero_shot") or {}),
                  ("Adapted, cross-fitted by patient", adaptation["adapted"]))
        section.tables.append(Table(["The site's films", "AUC", "Accuracy", "Sensitivity", "Specificity"],
                                    [[name, *(_estimate(block.get(key)) for key in ("roc_auc", "accuracy", "sensitivity", "specificity"))]
                                     for name, block in blocks],
                                    "As the run view shows them: every site film pooled, each part decided at its own threshold; "
                                    "[95 % interval] from resampling patients."))
        if (adaptation.get("shift") or {}).get("sentence"):
            section.paragraphs.append(f"Shift check: {adaptation['shift']['sentence']}")
    mean_std = summary.get("mean_std") or {}
    pooled = summary.get("out_of_fold") or {}
    rows = [[label, f"{number(mean_std[key].get('mean'))} ± {number(mean_std[key].get('std'))}", number(pooled.get(key))]
            for key, label in CV_METRICS if isinstance(mean_std.get(key), dict)]
    if rows:
        section.tables.append(Table(["Metric", "Cross-validation, mean ± std over folds", "Pooled out-of-fold"], rows,
                                    f"At the run's operating point (threshold {number(summary.get('threshold'))})."))
    if evaluations:
        section.tables.append(Table(
            ["Evaluation", "Images", "AUC [95 % CI]", "Accuracy", "Sensitivity", "Specificity", "PPV", "NPV"],
            [[item["name"], str(item.get("n_images", "–")), number(item["metrics"].get("roc_auc")) + _interval(item.get("auc_ci")),
              percent(item["metrics"].get("accuracy")), percent(item["metrics"].get("sensitivity")), percent(item["metrics"].get("specificity")),
              percent((item.get("predictive_values") or {}).get("ppv")), percent((item.get("predictive_values") or {}).get("npv"))]
             for item in evaluations],
            "External evaluations, on folders the run never trained on; the AUC interval is a bootstrap over patients.",
        ))
        # The same sentences as the run view's: where an evaluation's films come from, and what they share with training.
        section.paragraphs += [f"Evaluation {item['name']}: {note}" for item in evaluations for note in evaluation_notes(item)]
        gap = gap_table(run, evaluations)
        names = [item["name"] for item in evaluations]
        section.tables.append(Table(
            ["Metric", CV_COLUMN, *names],
            [[row["metric"], number(row[CV_COLUMN].get("value"))] + [
                number(row[name].get("value")) + (f" ({row[name]['change']:+.3f})" if row[name].get("change") is not None else "") for name in names]
             for row in gap],
            "The gap: the cross-validation estimate next to each evaluation, with the change.",
        ))
    else:
        section.paragraphs.append("No external evaluation yet: `python -m zoidberg evaluate --run ID --data DIR` scores the run on a folder of new patients.")
    return section


def operating_point_section(run: Run, evaluations: list[dict]) -> Section:
    """The threshold, how it was chosen, and sensitivity, specificity, PPV and NPV at the stated prevalences."""
    point = run.read_json(OPERATING_POINT_FILE) or {}
    summary = run.summary() or {}
    section = Section("The operating point")
    if not point:
        section.paragraphs.append(f"Threshold {number(summary.get('threshold'))} ({summary.get('operating_point', 'the most probable class')}).")
        return section
    choice = point.get("choice") or {}
    section.paragraphs.append(
        f"Threshold {number(point.get('threshold'))} on {choice.get('probabilities', 'raw')} probabilities, chosen by "
        f"{summary.get('operating_point') or choice.get('method')} on out-of-fold predictions (never on a test split). "
        f"An X-ray is called pneumonia when its probability is at least the threshold."
    )
    rows = [[row["rates"], percent(row["prevalence"]), percent(row["sensitivity"]), percent(row["specificity"]), percent(row["ppv"]), percent(row["npv"])]
            for row in rates_to_read(point, evaluations)]
    section.tables.append(Table(["Rates", "Prevalence", "Sensitivity", "Specificity", "PPV", "NPV"], rows,
                                "Measured rates first: what the model did on each evaluation's films. The cross-validation "
                                "rows carry the out-of-fold sensitivity and specificity to other prevalences by Bayes' rule, "
                                f"which {SAME_FILMS_ASSUMPTION}: where a measured row exists, quote it."))
    return section


def confusion_table(matrix: list[list[int]], class_names, caption: str) -> Table:
    """A confusion matrix as a table: rows are true classes, columns predicted ones."""
    return Table(["true \\ predicted", *class_names], [[name, *(str(count) for count in row)] for name, row in zip(class_names, matrix)], caption)


def confusion_section(run: Run, evaluations: list[dict]) -> Section:
    """The out-of-fold confusion matrix and each evaluation's."""
    summary = run.summary() or {}
    class_names = summary.get("class_names") or []
    section = Section("Confusion matrices")
    adapted = (summary.get("adaptation") or {}).get("adapted") or {}
    if adapted.get("n_normal") is not None and adapted.get("n_pneumonia") is not None:
        normal_wrong, missed = adapted.get("normal_called_pneumonia", 0), adapted.get("pneumonia_missed", 0)
        section.tables.append(confusion_table([[adapted["n_normal"] - normal_wrong, normal_wrong], [missed, adapted["n_pneumonia"] - missed]],
                                              class_names, f"The site's films, cross-fitted, each part at its own threshold (as the run "
                                              f"view: {normal_wrong} of {adapted['n_normal']} normal films called pneumonia, {missed} of "
                                              f"{adapted['n_pneumonia']} pneumonias missed)."))
    matrix = (summary.get("out_of_fold") or {}).get("confusion_matrix")
    if matrix:
        caption = ("Out-of-fold scores at the single threshold chosen for new films." if adapted else "Out-of-fold, at the operating point.")
        section.tables.append(confusion_table(matrix, class_names, caption))
    for item in evaluations:
        if item["metrics"].get("confusion_matrix"):
            section.tables.append(confusion_table(item["metrics"]["confusion_matrix"], item.get("class_names") or class_names, f"{item['name']}, at the operating point."))
    return section


def load_calibration_bins(run: Run) -> list[dict]:
    """The out-of-fold reliability bins on the run's probability scale."""
    summary = run.summary() or {}
    out_of_fold = (run.read_json(CALIBRATION_FILE) or {}).get("out_of_fold") or {}
    return (out_of_fold.get(summary.get("probabilities", "raw")) or out_of_fold.get("raw") or {}).get("bins") or []


def figures_section(run: Run, evaluations: list[dict]) -> Section:
    """ROC, reliability and decision curves, out of fold and on every evaluation."""
    from zoidberg.reporting import charts

    summary = run.summary() or {}
    section = Section("Curves")
    scale = summary.get("probabilities", "raw")
    makers = (
        lambda: charts.roc_chart(summary.get("roc") or {}, evaluations),
        lambda: charts.reliability_chart(load_calibration_bins(run), [(item["name"], ((item.get("calibration") or {}).get(item.get("scale", scale)) or {}).get("bins") or []) for item in evaluations]),
        lambda: charts.decision_curve_chart(summary.get("decision_curve"), evaluations),
    )
    for make in makers:
        try:
            chart = make()
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("A report figure could not be drawn: %s", error)
            continue
        if chart is not None:
            section.charts.append(chart)
    return section


def examples_section(run: Run, evaluations: list[dict], count: int = DEFAULT_EXAMPLES, gradcam: bool = True, ensemble=None) -> Section:
    """The most wrong X-rays (of the latest evaluation when there is one, else out of fold), with Grad-CAM."""
    from zoidberg.evaluation.errors import evaluation_images, out_of_fold_images

    section = Section("Misclassified X-rays")
    try:
        scored = evaluation_images(run, evaluations[-1]) if evaluations else out_of_fold_images(run)
    except (ValueError, OSError, KeyError) as error:
        section.paragraphs.append(f"No misclassified X-rays can be shown: {error}")
        return section
    binary = len(scored.class_names) == 2
    if binary:
        # The most wrong of each kind, in turn, so that both mistakes are seen.
        pairs = itertools.zip_longest(scored.select("false positives"), scored.select("false negatives"))
        chosen = [image for pair in pairs for image in pair if image is not None][:count]
    else:
        chosen = scored.select("all errors")[:count]
    source = f"evaluation {evaluations[-1]['name']}" if evaluations else "out-of-fold predictions"
    section.paragraphs.append(
        f"The {len(chosen)} most wrong of {len(scored.select('all errors'))} misclassified images of the {source}"
        + (" (false positives and false negatives)" if binary else "")
        + ". Grad-CAM colours the regions that pushed the model towards its (wrong) answer; it shows where the model looked, not why."
    )
    if gradcam and chosen and ensemble is None:
        ensemble, problem = _load_ensemble(run)
        if problem:
            section.warning = f"Grad-CAM is left out of this report: the run's models could not be loaded ({problem})."
            section.paragraphs.append(section.warning)
    elif not gradcam:
        ensemble = None
    for image in chosen:
        picture = example_picture(image.path, ensemble)
        if picture is None:
            continue
        png, made = picture
        what = f"P(pneumonia) {image.probability:.3f}" if binary else f"P({image.predicted}) {image.probability:.3f}"
        fold = f", fold {image.fold}" if image.fold else ""
        section.examples.append(Example(os.path.basename(image.path), png, f"true {image.label}, called {image.predicted}; {what}{fold}; patient {image.patient}", made))
    return section


def _load_ensemble(run: Run):
    """(the run's models for Grad-CAM, None), or (None, why) when they cannot be loaded."""
    try:
        from zoidberg.inference.loading import load_ensemble

        return load_ensemble(run.id, runs_dir=run.path.parent), None
    except (ValueError, OSError, LookupError) as error:
        logger.warning("Grad-CAM left out of the report: %s", error)
        return None, str(error)


def example_picture(path: str, ensemble) -> tuple[bytes, bool] | None:
    """(PNG bytes, whether Grad-CAM is drawn) of one X-ray, or None when the file cannot be read."""
    import io

    from PIL import Image

    from zoidberg.data.imaging import ImageDecodeError, decode_grayscale, downscale

    try:
        gray = decode_grayscale(path, draft_size=EXAMPLE_SIDE)
    except (ImageDecodeError, OSError):
        return None
    picture, made = None, False
    if ensemble is not None:
        from zoidberg.inference.explain import gradcam_overlay

        try:
            picture, made = gradcam_overlay(ensemble, decode_grayscale(path, draft_size=ensemble.image_size), EXAMPLE_SIDE), True
        except (ImageDecodeError, OSError, ValueError) as error:
            logger.warning("No Grad-CAM for %s: %s", path, error)
    if picture is None:
        picture = downscale(gray, EXAMPLE_SIDE)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue(), made


def attention_section(run: Run, evaluations: list[dict]) -> Section:
    """Where the model looks: the stored Grad-CAM checks (share of evidence inside the lung fields), and the films flagged."""
    from zoidberg.inference.attention import LUNG_BOX, OUTSIDE_SHARE, attention_sentence, stored_checks

    section = Section("Where the model looks")
    checks = stored_checks(run, evaluations)
    x0, y0, x1, y1 = (round(100 * value) for value in LUNG_BOX)
    section.paragraphs.append(
        f"The share of each film's Grad-CAM evidence (for the class it was called) inside a lung-field box, x {x0}-{x1} % and "
        f"y {y0}-{y1} % of the film. Evidence on a marker, the neck or the abdomen is a shortcut, not medicine; a film with "
        f"less than {OUTSIDE_SHARE:.0%} inside is flagged."
    )
    if not checks:
        section.paragraphs.append("Not measured yet: `python -m zoidberg attention --run ID` (out-of-fold films) or "
                                  "`--evaluation NAME` measures it and stores it in the run.")
        return section
    section.paragraphs += [attention_sentence(check) for check in checks]
    rows = [[check["source"], f"{item['share']:.0%}", f"{item['label']} → {item['predicted']}", os.path.basename(item["path"])]
            for check in checks for item in check["outside"][:5]]
    if rows:
        section.tables.append(Table(["Films of", "Inside the lungs", "Called", "File"], rows, "Flagged films, least evidence inside first (at most five per source)."))
    return section


def build_report(run: Run, *, examples: int = DEFAULT_EXAMPLES, gradcam: bool = True, ensemble=None) -> Report:
    """Reads everything the report says from the run store.

    Args:
        run: A completed (or stopped) cross-validation or ensemble run.
        examples: How many misclassified X-rays to show.
        gradcam: Draw Grad-CAM over them (loads the run's models).
        ensemble: The run's loaded models, when the caller has them already.

    Returns:
        The report, ready for render_html or render_pdf.

    Raises:
        ValueError: When the run has no results yet.
    """
    from zoidberg.evaluation.stored import current_evaluations

    if run.kind not in MODEL_KINDS:
        raise ValueError(f"Run {run.id} is a {run.kind} run: reports are made of cross-validation, ensemble and adapted runs.")
    if run.kind == "cv":
        # The method and data sections read it: a damaged file is named, never reported as blanks.
        run.checked_config()
    summary = run.summary()
    if not summary or not summary.get("mean_std"):
        raise ValueError(f"Run {run.id} has no results yet ({run.status().get('state', 'unknown')}): report it once it has finished.")
    evaluations = [item for item in current_evaluations(run) if item.get("metrics")]
    from zoidberg.reporting.facts_page import model_facts_section

    sections = [
        model_facts_section(run), intended_use_section(), data_section(run), method_section(run), results_section(run, evaluations),
        figures_section(run, evaluations), operating_point_section(run, evaluations), confusion_section(run, evaluations),
    ]
    sections.append(attention_section(run, evaluations))
    if examples > 0:
        sections.append(examples_section(run, evaluations, examples, gradcam, ensemble))
    return Report(
        title=f"Zoidberg report: {run.name}",
        subtitle=f"Run {run.id} · {run.kind} · made {now_iso()[:19].replace('T', ' ')} UTC · NOT A MEDICAL DEVICE",
        created=now_iso(),
        sections=sections,
    )
