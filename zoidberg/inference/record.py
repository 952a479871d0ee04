"""The prediction record: one documented, versioned row per image, the same in predict --json, predictions.csv, the HTTP service and the DICOM report."""

from __future__ import annotations

# Bumped when a field is renamed, removed or changes meaning; adding a field keeps the version.
RECORD_SCHEMA_VERSION = "1.1"
# What the scripts written against an older release may still read, and until when.
DEPRECATED_ALIASES = {"image": ("file", "2.2")}
# Where a diagnosis would stand: what a reader reads for a film the gate refused.
REFUSED = "REFUSED"

# Every field, its meaning, once: the README's table and the tests are drawn from it.
RECORD_FIELDS: tuple[tuple[str, str], ...] = (
    ("schema_version", f"the record's version ({RECORD_SCHEMA_VERSION}); a renamed or removed field bumps it"),
    ("run_id", "the run (or ensemble, or adapted run) that predicted"),
    ("file", "the file's path, or the name it was uploaded or retrieved under (a DICOM's SOP Instance UID)"),
    ("study_uid", "from a PACS: the StudyInstanceUID (`file` is then the SOP Instance UID)"),
    ("series_uid", "from a PACS: the SeriesInstanceUID"),
    ("image", "deprecated alias of `file` (its name until 2.0), kept for one release: removed in 2.2"),
    ("prediction", f"what to read: the predicted class, or {REFUSED} when the gate refused the film (no diagnosis)"),
    ("label", "the model's class whatever the gate said (binary runs: PNEUMONIA when probability ≥ threshold)"),
    ("class_index", "the index of `label` in the run's classes"),
    ("probability", "P(pneumonia) for binary runs on `scale`, P(label) otherwise: the number the threshold applies to"),
    ("probability_raw", "the same before calibration"),
    ("probability_calibrated", "the same after the run's calibration, or null when it has none"),
    ("scale", "the probabilities the threshold applies to: raw or calibrated"),
    ("threshold", "the run's operating point (or --threshold), on `scale`; null for three-class runs"),
    ("spread", "standard deviation of `probability` across the fold models (or members)"),
    ("per_fold", "`probability` of each fold model (or member)"),
    ("unit", "what each per_fold value is: fold or member"),
    ("class_probabilities", "the mean probability of every class"),
    ("in_distribution", "false when the out-of-distribution gate refused the film, null when the run has no gate"),
    ("ood_score", "the gate's distance in threshold units (refused above 1)"),
    ("ood_reason", "why the gate refused it, in one line"),
    ("tta", "whether test-time variants were averaged"),
    ("true_label", "the class its folder names (NORMAL/PNEUMONIA folders only)"),
    ("correct", "whether label equals true_label"),
    ("error", "why the file could not be predicted (its other fields are then absent)"),
    ("written_back", "from a PACS with --store-results: the SOP Instance UIDs of the report and the Grad-CAM capture stored in the study"),
)
FIELD_NAMES = tuple(name for name, _ in RECORD_FIELDS)
# Fields that carry a probability or a class where a refused film must show none (the CSV and the service).
DIAGNOSIS_FIELDS = ("label", "class_index", "probability", "probability_raw", "probability_calibrated", "spread", "per_fold",
                    "class_probabilities", "correct")


def is_refused(row: dict) -> bool:
    """Whether the gate refused this row's film."""
    return row.get("in_distribution") is False


def make_record(row: dict, *, run_id: str, keep_refused_scores: bool = True) -> dict:
    """A prediction row (zoidberg.inference.batch) as the versioned record.

    Args:
        row: One row of predict_files (file, the decision's fields, the gate's fields, or error).
        run_id: The run that predicted.
        keep_refused_scores: Keep a refused film's probabilities (predict --json, for developers);
            False blanks them as the CSV does, where a reader could take them for a diagnosis.

    Returns:
        The record: schema_version, run_id, the row's fields, prediction, and the alias image.
    """
    record = {"schema_version": RECORD_SCHEMA_VERSION, "run_id": run_id, **row}
    if "error" not in row:
        record["prediction"] = REFUSED if is_refused(row) else row.get("label")
        if is_refused(row) and not keep_refused_scores:
            record.update({key: None for key in DIAGNOSIS_FIELDS if key in record})
    for alias, (field, _) in DEPRECATED_ALIASES.items():
        if field in record:
            record[alias] = record[field]
    return record


def csv_columns(class_names) -> list[str]:
    """The columns of predictions.csv: the record's fields, flat (a column per class probability instead of the dict)."""
    flat = [name for name in FIELD_NAMES if name not in ("per_fold", "class_probabilities", "class_index", "unit", "written_back")]
    position = flat.index("in_distribution")
    return [*flat[:position], *(f"p_{name}" for name in class_names), *flat[position:]]


def csv_cells(record: dict, class_names) -> dict:
    """One record as predictions.csv's cells (a refused film's probabilities blanked, whatever the record kept)."""
    cells = {key: record.get(key) for key in csv_columns(class_names)}
    for name, value in (record.get("class_probabilities") or {}).items():
        cells[f"p_{name}"] = round(value, 6)
    if is_refused(record):
        cells.update({key: None for key in cells if key in DIAGNOSIS_FIELDS or key.startswith("p_")})
    return cells


def records_csv_text(records, class_names) -> str:
    """predictions.csv as text (the Predict page's download; the CLI writes the same cells to its file)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_columns(class_names))
    writer.writeheader()
    writer.writerows(csv_cells(record, class_names) for record in records)
    return buffer.getvalue()


def record_fields_markdown() -> str:
    """The README's table of the record's fields."""
    lines = ["| field | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {meaning} |" for name, meaning in RECORD_FIELDS]
    return "\n".join(lines)
