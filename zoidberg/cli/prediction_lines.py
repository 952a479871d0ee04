"""What predict prints and writes for each film: one line, or one predictions.csv row (the prediction record)."""

from __future__ import annotations

from pathlib import Path

from zoidberg.cli.options import CliError


def write_predictions_csv(path: str, records: list[dict], class_names: list[str]) -> None:
    """Writes predict's records as predictions.csv (zoidberg.inference.record: the documented columns, refused films without probabilities)."""
    import csv

    from zoidberg.inference.record import csv_cells, csv_columns
    from zoidberg.runs.store import open_csv, write_atomically

    def write(staged):
        # A file name that is not valid UTF-8 is written byte for byte (see open_csv): it reads back as the path.
        with open_csv(staged, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=csv_columns(class_names))
            writer.writeheader()
            writer.writerows(csv_cells(record, class_names) for record in records)

    # Staged, then renamed: a failure leaves the previous file (or none), never half of one.
    write_atomically(Path(path), write)


def describe_prediction(row: dict, threshold: float) -> str:
    """One line per image: the class, its probability and spread, the scale and the threshold."""
    scale = f"{row.get('scale', 'raw')} " if row.get("probability_calibrated") is not None else ""
    if row.get("threshold") is not None:
        other = ""
        if row.get("probability_calibrated") is not None:
            other_scale = "raw" if row.get("scale") == "calibrated" else "calibrated"
            other = f", {other_scale} {row['probability_' + other_scale]:.3f}"
        return (
            f"{row['label']} ({scale}p_pneumonia={row['probability']:.3f} ± {row['spread']:.3f} across {row.get('unit', 'fold')}s{other}, "
            f"threshold {threshold:.3f})"
        )
    others = ", ".join(f"p_{name}={value:.3f}" for name, value in row["class_probabilities"].items())
    return f"{row['label']} ({row['probability']:.3f} ± {row['spread']:.3f} across {row.get('unit', 'fold')}s; {others})"


def prediction_line(row: dict, threshold: float, where: str | None = None) -> str:
    """The line predict prints for one file or PACS film: its error, its refusal, or its decision."""
    where = where or row["file"]
    if "error" in row:
        return f"{where}: ERROR {row['error']}"
    if row.get("in_distribution") is False:
        return f"{where}: REFUSED, no diagnosis. {row['ood_reason']}"
    return f"{where}: {describe_prediction(row, threshold)}"


def log_records(args, records: list[dict]) -> None:
    """Appends the records to --records-log, when given (whole lines; a log that cannot be written is one sentence)."""
    if not getattr(args, "records_log", None):
        return
    from zoidberg.monitoring.records_log import append_records

    try:
        append_records(args.records_log, records)
    except OSError as error:
        raise CliError(f"Cannot append to the records log {args.records_log}: {error.strerror or error}.") from None
