"""The next site films to label: the run's prediction records of the candidates, the labels so far, an ordering; the gate's refusals asked apart."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoidberg.adaptation.ordering import order_films
from zoidberg.data.site_labels import SiteLabels

# "not usable?" questions asked in one call, at most: one in ten of the films named, at least one.
GATE_SHARE = 10
NOT_USABLE_QUESTION = "not_usable?"
LABEL_QUESTION = "label"


@dataclass(frozen=True)
class NextFilm:
    """A film to put in front of a reader.

    Attributes:
        file: The path as given, or the SOP Instance UID of a PACS film.
        ask: LABEL_QUESTION (normal, pneumonia or not usable), or NOT_USABLE_QUESTION for a film the gate
            refused: never a diagnosis to confirm.
        chosen_by: The ordering (or "gate"), to be written with its label.
        reason: Why this film, in a sentence.
        uids: study_uid, series_uid and sop_uid of a PACS film (empty for a file).
    """

    file: str
    ask: str
    chosen_by: str
    reason: str
    uids: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """What label-next --json prints for it."""
        return {"file": self.file, "ask": self.ask, "chosen_by": self.chosen_by, "reason": self.reason, **self.uids}


def film_key(record: dict) -> str:
    """The key that finds a candidate in a labels file: its SOP Instance UID, else its absolute path."""
    if record.get("sop_uid"):
        return str(record["sop_uid"])
    return str(Path(str(record["file"])).expanduser().resolve())


def labeled_keys(labels: SiteLabels | None) -> set[str]:
    """Every film a labels file names (labeled, not usable, or disagreed on), by film_key."""
    if labels is None:
        return set()
    return {labels.where(film) for film in labels.readers}


def choose_next_films(
    records: list[dict],
    labels: SiteLabels | None,
    *,
    count: int = 20,
    order: str = "stratified",
    threshold: float = 0.5,
    features: np.ndarray | None = None,
    random_state: int = 0,
) -> list[NextFilm]:
    """Names the next films to label among the candidates' prediction records.

    Films the gate let through are ordered (adaptation.ordering); the bands of a stratified
    order span them all, labeled ones included. Films the gate refused are asked "not usable?"
    after them, at most one in GATE_SHARE of `count`. Unreadable films are never named.

    Args:
        records: One prediction record (or predict_files row) per candidate: file, probability
            (P(pneumonia) on the run's scale), in_distribution, ood_reason, and the UIDs of a PACS film.
        labels: The labels so far (None: none).
        count: How many films to name.
        order: One of adaptation.ordering.ORDERS.
        threshold: The run's threshold on the probabilities' scale.
        features: (len(records), F) frozen features, for the "diverse" order.
        random_state: Seed.

    Returns:
        NextFilms, the most wanted first.
    """
    done = labeled_keys(labels)
    usable = [index for index, record in enumerate(records)
              if not record.get("error") and record.get("probability") is not None and record.get("in_distribution") is not False]
    refused = [index for index, record in enumerate(records) if not record.get("error") and record.get("in_distribution") is False
               and film_key(record) not in done]
    asked_refused = refused[: max(1, count // GATE_SHARE)] if refused else []
    wanted = count - len(asked_refused) if len(usable) > 0 else 0
    films: list[NextFilm] = []
    if usable and wanted > 0:
        positive = np.array([records[index]["probability"] for index in usable], dtype=float)
        labeled = np.array([film_key(records[index]) in done for index in usable])
        picks = order_films(positive, labeled, count=wanted, order=order, threshold=threshold,
                            features=None if features is None else np.asarray(features)[usable], random_state=random_state)
        films = [_next(records[usable[pick.index]], LABEL_QUESTION, pick.chosen_by, pick.reason) for pick in picks]
    # Fewer usable films than asked: the refused ones fill the rest.
    room = count - len(films)
    films += [_next(records[index], NOT_USABLE_QUESTION, "gate",
                    f"the input gate refused it ({records[index].get('ood_reason') or 'unlike the training films'}): is it usable at all?")
              for index in refused[: max(len(asked_refused), room)]][:room]
    return films


def _next(record: dict, ask: str, chosen_by: str, reason: str) -> NextFilm:
    uids = {name: record[name] for name in ("study_uid", "series_uid", "sop_uid") if record.get(name)}
    if record.get("study_uid") and "sop_uid" not in uids:
        uids["sop_uid"] = str(record["file"])
    return NextFilm(str(record["file"]), ask, chosen_by, reason, uids)
