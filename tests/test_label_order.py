"""Which films to label next: the orderings, the labels so far left out, and the gate's refusals asked apart (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from zoidberg.adaptation.next_films import NOT_USABLE_QUESTION, choose_next_films
from zoidberg.adaptation.ordering import ORDERS, order_films
from zoidberg.data.site_labels import LabelEntry, append_label, read_labels


def _records(tmp_path, n: int = 100, refused=()) -> list[dict]:
    rng = np.random.default_rng(1)
    records = []
    for index in range(n):
        path = tmp_path / "films" / f"film{index:03d}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        out = index in refused
        records.append({"file": str(path), "probability": float(rng.random()), "in_distribution": not out,
                        "ood_reason": "a photograph, not a radiograph" if out else None})
    return records


@pytest.mark.parametrize("order", ORDERS)
def test_every_order_names_unlabeled_films_once_and_goes_on_where_it_stopped(order):
    rng = np.random.default_rng(0)
    positive, features = rng.random(60), rng.normal(size=(60, 5))
    labeled = np.zeros(60, dtype=bool)
    named = []
    for _ in range(3):
        picks = order_films(positive, labeled, count=20, order=order, threshold=0.5, features=features, random_state=3)
        indices = [pick.index for pick in picks]
        assert len(indices) == len(set(indices)) == 20 and not labeled[indices].any()
        assert all(pick.chosen_by == order and pick.reason for pick in picks)
        labeled[indices] = True
        named += indices
    assert sorted(named) == list(range(60))
    assert order_films(positive, labeled, count=5, order=order) == []


def test_stratified_spreads_over_the_scores_uncertain_hugs_the_threshold_and_diverse_covers_the_features():
    positive = np.linspace(0.001, 0.999, 200)
    labeled = np.zeros(200, dtype=bool)
    stratified = [pick.index for pick in order_films(positive, labeled, count=10, order="stratified")]
    # One film in each tenth of the scores: a fair sample, never a cluster.
    assert sorted(index // 20 for index in stratified) == list(range(10))
    assert "0." not in order_films(positive, labeled, count=1, order="stratified")[0].reason  # the reason never leads the reader
    uncertain = [pick.index for pick in order_films(positive, labeled, count=10, order="uncertain", threshold=0.3)]
    assert all(abs(positive[index] - 0.3) < 0.03 for index in uncertain)
    features = np.r_[np.zeros((190, 2)), np.full((10, 2), 50.0)]
    features[:190] += np.random.default_rng(0).normal(size=(190, 2))
    diverse = [pick.index for pick in order_films(positive, labeled, count=3, order="diverse", features=features)]
    assert any(index >= 190 for index in diverse)  # the far cluster is reached at once
    with pytest.raises(ValueError, match="order must be one of"):
        order_films(positive, labeled, count=1, order="loudest")


def test_films_in_the_labels_file_are_never_named_again_and_refused_films_are_asked_not_usable(tmp_path):
    records = _records(tmp_path, refused={5, 6})
    labels_file = tmp_path / "labels.jsonl"
    for record in records[:30]:
        append_label(labels_file, LabelEntry(f"films/{record['file'].rsplit('/', 1)[1]}", "normal", reader="ana"))
    films = choose_next_films(records, read_labels(labels_file), count=20)
    named = [film.file for film in films]
    assert len(named) == 20 and not set(named) & {record["file"] for record in records[:30]}
    # The gate's refusals: asked "not usable?", by the gate, never as a diagnosis to confirm; at most one in ten.
    assert records[5]["file"] not in named  # labeled already
    for film in films:
        record = next(record for record in records if record["file"] == film.file)
        assert (film.ask == NOT_USABLE_QUESTION) == (record["in_distribution"] is False)
        assert film.ask != "label" or record["in_distribution"] is not False
    fresh = choose_next_films(records, None, count=20)
    asked = [film for film in fresh if film.ask == NOT_USABLE_QUESTION]
    assert len(asked) == 2 and all(film.chosen_by == "gate" and "is it usable" in film.reason for film in asked)
    assert fresh[-1].ask == NOT_USABLE_QUESTION and fresh[0].ask == "label"
    assert {"file", "ask", "chosen_by", "reason"} <= set(fresh[0].to_dict())
    # Unreadable films are never named; a PACS film carries its UIDs.
    pacs = [{"file": "1.2.3", "sop_uid": "1.2.3", "study_uid": "1.2", "series_uid": "1.2.9", "probability": 0.4, "in_distribution": True},
            {"file": "1.2.4", "sop_uid": "1.2.4", "error": "cannot read"}]
    only = choose_next_films(pacs, None, count=5)
    assert [film.to_dict() for film in only] == [{"file": "1.2.3", "ask": "label", "chosen_by": "stratified", "reason": only[0].reason,
                                                   "study_uid": "1.2", "series_uid": "1.2.9", "sop_uid": "1.2.3"}]


def test_a_film_is_one_film_whether_a_script_wrote_it_relative_or_the_page_absolute(tmp_path):
    records = _records(tmp_path, n=10)
    labels_file = tmp_path / "labels.jsonl"
    append_label(labels_file, LabelEntry("films/film000.png", "normal", reader="script"))  # as `label` writes it
    append_label(labels_file, LabelEntry(str(tmp_path / "films" / "film001.png"), "normal", reader="page"))  # as the page writes it
    append_label(labels_file, LabelEntry("", "pneumonia", reader="page", sop_uid="1.2.840.1", study_uid="1.2"))
    labels = read_labels(labels_file)
    assert {labels.where(film) for film in labels.readers} == {str((tmp_path / "films" / "film000.png").resolve()),
                                                               str((tmp_path / "films" / "film001.png").resolve()), "1.2.840.1"}
    named = {film.file for film in choose_next_films(records, labels, count=10)}
    assert named == {record["file"] for record in records[2:]}
