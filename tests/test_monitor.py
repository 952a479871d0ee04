"""After go-live: the records log (whole lines, rotated, nothing that names a patient) and the monitor's windows and alert rule."""

import json

import numpy as np
import pytest

from zoidberg.inference.record import RECORD_SCHEMA_VERSION, REFUSED
from zoidberg.monitoring.records_log import append_records, read_records
from zoidberg.monitoring.reference import Reference
from zoidberg.monitoring.watch import make_windows, watch_window


def record(positive: float, *, when: str = "2026-12-08T10:00:00.000Z", ood: float = 0.0, refused: bool = False, exposure=(120.0, 60.0),
           **more) -> dict:
    """A binary run's record as record_of writes it (a refused film without its diagnosis)."""
    base = {"schema_version": RECORD_SCHEMA_VERSION, "run_id": "r", "predicted_at": when, "door": "http", "file": "Doe^Jane.png",
            "pixel_mean": exposure[0], "pixel_std": exposure[1],
            "threshold": 0.5, "scale": "raw", "in_distribution": not refused, "ood_score": ood, "ood_reason": "a side view" if refused else None}
    if refused:
        return {**base, "prediction": REFUSED, "label": None, "probability": None, "probability_raw": None, **more}
    label = "pneumonia" if positive >= 0.5 else "normal"
    return {**base, "prediction": label, "label": label, "class_index": int(positive >= 0.5), "probability": positive,
            "probability_raw": positive, "probability_calibrated": None, **more}


def site_reference(rng, n: int = 300) -> Reference:
    labels = rng.random(n) < 0.6
    positive = np.clip(np.where(labels, rng.beta(8, 2, n), rng.beta(2, 8, n)), 0.001, 0.999)
    exposure = np.column_stack([rng.normal(120, 10, n), rng.normal(60, 5, n)])
    return Reference("site films", positive, rng.normal(0.0, 0.3, n), 0.01, float(labels.mean()), exposure=exposure,
                     labels=labels.astype(int))


def stable_window(rng, reference: Reference, n: int = 50) -> list[dict]:
    rows = rng.integers(0, len(reference.positive), n)
    return [record(float(reference.positive[row]), ood=float(rng.normal(0.0, 0.3)), exposure=(rng.normal(120, 10), rng.normal(60, 5)))
            for row in rows]


def test_the_log_keeps_whole_lines_rotates_and_never_holds_a_name_or_pixels(tmp_path):
    log = tmp_path / "records.jsonl"
    records = [record(0.9, gradcam_png="iVBORw0K...", true_label="pneumonia") for _ in range(30)]
    for chunk in range(3):
        append_records(log, records[chunk * 10 : (chunk + 1) * 10], rotate_bytes=3000, keep=2)
    kept = sorted(tmp_path.glob("records.jsonl*"))
    assert {path.name for path in kept} >= {"records.jsonl", "records.jsonl.1"} and not (tmp_path / "records.jsonl.3").exists()
    text = "".join(path.read_text() for path in kept if not path.name.endswith(".lock"))
    assert "Doe" not in text and "iVBOR" not in text and "true_label" not in text
    # A crash mid-write leaves a torn last line: it is skipped, and the next append starts a line of its own.
    with open(log, "a") as handle:
        handle.write('{"schema_version": "2.0", "run_')
    append_records(log, [record(0.2)])
    lines = read_records(log)
    assert lines[-1]["probability_raw"] == 0.2 and all(line["schema_version"] == RECORD_SCHEMA_VERSION for line in lines)


def test_records_are_read_from_predict_json_a_csv_and_older_versions(tmp_path):
    listed = tmp_path / "predict.json"
    listed.write_text(json.dumps([{**record(0.8), "schema_version": "1.1", "prediction": REFUSED, "label": "pneumonia", "probability": 0.8,
                                   "in_distribution": False}]))
    (old,) = read_records(listed)
    assert old["label"] is None and old["not_a_diagnosis"]["probability"] == 0.8
    table = tmp_path / "predictions.csv"
    table.write_text("schema_version,run_id,predicted_at,file,prediction,label,probability_raw,in_distribution,ood_score\n"
                     "2.0,r,2026-12-08T10:00:00Z,a.png,normal,normal,0.12,True,0.3\n")
    (row,) = read_records(table)
    assert row["probability_raw"] == 0.12 and row["in_distribution"] is True
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="holds no prediction records"):
        read_records(empty)


def test_windows_by_week_day_or_count():
    records = [record(0.5, when=f"2026-12-{day:02d}T09:00:00Z") for day in (1, 2, 8, 9, 9)]
    assert [name for name, _ in make_windows(records, "week")] == ["2026-W49", "2026-W50"]
    assert [len(rows) for _, rows in make_windows(records, "day")] == [1, 1, 1, 2]
    assert [len(rows) for _, rows in make_windows(records, "2")] == [2, 2, 1]
    with pytest.raises(ValueError, match="week, day or a number"):
        make_windows(records, "fortnight")


def test_stable_windows_stay_quiet_and_a_fifth_of_other_films_raises_the_alert():
    rng = np.random.default_rng(0)
    reference = site_reference(rng)
    stable = [watch_window(f"w{index}", stable_window(rng, reference), [reference]) for index in range(200)]
    assert sum(window["alert"] for window in stable) <= 2, "the false-alarm rate on stable windows stays under 1 %"
    quiet = stable[0]
    assert set(quiet) >= {"window", "films", "refused", "pneumonia_share", "shift", "alert", "why"} and quiet["why"].startswith("Like the site films")
    # A fifth refused (side views): the refusals alone raise it.
    side_views = stable_window(rng, reference, 40) + [record(0.0, refused=True, ood=2.0) for _ in range(10)]
    refused = watch_window("side views", side_views, [reference])
    assert refused["alert"] and refused["refused"] == 10 and "20% of the films were refused" in refused["why"]
    assert refused["refused_by_reason"] == {"a side view": 10}
    # A fifth the gate lets through but scores unlike the site's films (adults).
    adults = stable_window(rng, reference, 40) + [record(float(rng.random()), ood=float(rng.uniform(0.7, 0.95))) for _ in range(10)]
    assert watch_window("adults", adults, [reference])["alert"]
    # A fifth at another contrast (brighter, flatter), scored and let through as the site's films are.
    brighter = stable_window(rng, reference, 40) + [record(float(rng.random()), exposure=(175.0, 40.0)) for _ in range(10)]
    exposed = watch_window("contrast", brighter, [reference])
    assert exposed["alert"] and "another contrast" in exposed["why"]
    # An epidemic week (pneumonia only) is no shift: its scores are those of the reference's pneumonia films.
    pneumonias = np.flatnonzero(reference.labels == 1)
    epidemic = [record(float(reference.positive[row]), ood=float(rng.normal(0.0, 0.3))) for row in rng.choice(pneumonias, 50)]
    busy = watch_window("epidemic", epidemic, [reference])
    assert not busy["alert"] and busy["pneumonia_share"] > 0.8 and busy["shift"][0]["score_mix_pneumonia"] > 0.8
    # Scores of another population: everything called pneumonia, surer than any pneumonia the site knows.
    contrast = [record(float(rng.uniform(0.9, 1.0)), ood=float(rng.normal(0.0, 0.3))) for _ in range(50)]
    shifted = watch_window("population", contrast, [reference])
    assert shifted["alert"] and "KS distance" in shifted["why"] and shifted["pneumonia_share"] == 1.0


def test_a_reference_that_does_not_alert_is_reported_but_stays_silent():
    rng = np.random.default_rng(1)
    site = site_reference(rng)
    training = Reference("training films", np.clip(rng.beta(1, 1, 500), 0.001, 0.999), None, 0.005, 0.7, alerts=False)
    window = watch_window("w", stable_window(rng, site), [site, training])
    assert [shift["against"] for shift in window["shift"]] == ["site films", "training films"] and not window["alert"]
