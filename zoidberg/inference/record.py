"""The prediction record: one documented, versioned row per image, the same in predict --json, predictions.csv, the HTTP service and the DICOM report."""

from __future__ import annotations

# Bumped when a field is renamed, removed or changes meaning; adding a field keeps the version.
RECORD_SCHEMA_VERSION = "2.0"
# Older versions read_record still reads (upgraded to the current one).
READABLE_VERSIONS = ("1.1", "2.0")
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
    ("predicted_at", "when the film was scored (UTC, ISO 8601)"),
    ("door", "how the film came: cli (predict on files), page (the Predict page), pacs (a PACS study), http (serve), label (label-next, the Label page)"),
    ("prediction", f"what to read: the predicted class, or {REFUSED} when the gate refused the film (no diagnosis)"),
    ("label", "the predicted class (binary runs: PNEUMONIA when probability ≥ threshold); null when the film was refused"),
    ("class_index", "the index of `label` in the run's classes"),
    ("probability", "P(pneumonia) for binary runs on `scale`, P(label) otherwise: the number the threshold applies to; null when refused"),
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
    ("not_a_diagnosis", "a refused film only: what the model would have said ({label, probability}), for developers of the gate; never a finding"),
    ("pixel_mean", "the mean gray level (0-255) of the film as the model saw it: with pixel_std, what the monitor compares acquisitions by (no pixels)"),
    ("pixel_std", "the standard deviation of those gray levels"),
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


def make_record(row: dict, *, run_id: str, predicted_at: str | None = None, door: str | None = None) -> dict:
    """A decided row (zoidberg.inference.scoring.record_of) as the versioned record.

    One rule at every door: a refused film's label and probabilities are null, and what the
    model would have said sits under `not_a_diagnosis`, a name no script takes for a finding.

    Args:
        row: file, the decision's fields and the gate's fields, or error.
        run_id: The run that predicted.
        predicted_at: When the film was scored (UTC, ISO 8601).
        door: How the film came (zoidberg.inference.scoring.DOORS).

    Returns:
        The record: schema_version, run_id, predicted_at, door, the row's fields, prediction, and the alias image.
    """
    record = {"schema_version": RECORD_SCHEMA_VERSION, "run_id": run_id, "predicted_at": predicted_at, "door": door, **row}
    if "error" not in row:
        record["prediction"] = REFUSED if is_refused(row) else row.get("label")
        if is_refused(row):
            _withhold_diagnosis(record)
    for alias, (field, _) in DEPRECATED_ALIASES.items():
        if field in record:
            record[alias] = record[field]
    return record


def _withhold_diagnosis(record: dict) -> None:
    """Blanks a refused film's diagnosis fields, keeping the model's answer under not_a_diagnosis."""
    if record.get("label") is not None and record.get("not_a_diagnosis") is None:
        record["not_a_diagnosis"] = {"label": record["label"], "probability": record.get("probability")}
    record.update({key: None for key in DIAGNOSIS_FIELDS if key in record})
    record.setdefault("label", None)
    record.setdefault("probability", None)


def read_record(record: dict) -> dict:
    """A record as the current version has it, from any readable version (1.1 kept a refused film's label and probability).

    Raises:
        ValueError: For a record of an unknown version.
    """
    version = str(record.get("schema_version", ""))
    if version not in READABLE_VERSIONS:
        raise ValueError(f"A prediction record of version {version or 'none'}: this release reads versions "
                         f"{', '.join(READABLE_VERSIONS)}.")
    upgraded = {**record, "schema_version": RECORD_SCHEMA_VERSION}
    upgraded.setdefault("predicted_at", None)
    upgraded.setdefault("door", None)
    if "error" not in upgraded and is_refused(upgraded):
        _withhold_diagnosis(upgraded)
    return upgraded


def csv_columns(class_names) -> list[str]:
    """The columns of predictions.csv: the record's fields, flat (a column per class probability instead of the dict)."""
    flat = [name for name in FIELD_NAMES if name not in ("per_fold", "class_probabilities", "class_index", "unit", "written_back", "not_a_diagnosis")]
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
