"""A study in a PACS predicted as files are: CR/DX frontal films scored and gated, the rest given a reason, results written back on request."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zoidberg.inference.record import REFUSED
from zoidberg.inference.scoring import FilmSource, ScoredFilm, record_of, score_films
from zoidberg.integrations.dicomweb import PacsConnection, PacsError, PacsInstance, retrieve_bytes, store_datasets, study_instances

# The long side of the Grad-CAM capture written back.
CAPTURE_SIDE = 1024


@dataclass
class PacsPrediction:
    """One instance of a study, scored (or refused by its header) and, once decided, its record.

    Attributes:
        instance: Its UIDs and header facts.
        film: What the run said of it, threshold-free (zoidberg.inference.scoring.ScoredFilm).
        source: The retrieved pydicom dataset (None when it was refused by its header, unread).
        record: Its prediction record at the threshold last decided (file is the SOP Instance UID).
    """

    instance: PacsInstance
    film: ScoredFilm
    source: object = None
    record: dict = field(default_factory=dict)

    @property
    def gray(self) -> np.ndarray | None:
        """The decoded film (None when not retrieved or unreadable)."""
        return self.film.gray

    @property
    def model_input(self) -> np.ndarray | None:
        """The film as the network saw it."""
        return self.film.model_input

    @property
    def diagnosed(self) -> bool:
        """Whether it has a finding (scored and not refused)."""
        return self.record.get("prediction") not in (None, REFUSED)

    def decide(self, ensemble, threshold: float | None = None, *, door: str = "pacs") -> dict:
        """Its record at a threshold (record_of: the one place a film gets a diagnosis); kept as `record`."""
        self.record = record_of(ensemble, self.film, threshold, door=door)
        return self.record


def score_study(ensemble, client, connection: PacsConnection, study_uid: str, *, retrieved: dict | None = None) -> tuple[list[PacsPrediction], int]:
    """Scores every film of a study, threshold-free; reads only (nothing is written to the PACS).

    A CT, an MR, a side view or an adult's film is refused by what the search says of it,
    before its pixels are retrieved; reports and captures (Zoidberg's own results among
    them) are left out. The rest is retrieved and goes through score_films, as files do.

    Args:
        ensemble: A loaded run.
        client: make_client's client.
        connection: The connection (for messages).
        study_uid: The StudyInstanceUID.
        retrieved: SOP Instance UID → (bytes, dataset) already retrieved (the page's session); filled in.

    Returns:
        (one PacsPrediction per film, the number of result objects left out).

    Raises:
        PacsError: When the PACS has no such study.
    """
    listed, left_out = study_films(client, connection, study_uid, retrieved=retrieved)
    scored = score_films(ensemble, [source for _, source, _ in listed], keep_images=True)
    return [PacsPrediction(instance, film, dataset) for (instance, _, dataset), film in zip(listed, scored)], left_out


def study_films(client, connection: PacsConnection, study_uid: str, *, retrieved: dict | None = None) -> tuple[list[tuple], int]:
    """A study's films as the one prediction function takes them: listed, refused by header unread, or retrieved.

    Args:
        client: make_client's client.
        connection: The connection (for messages).
        study_uid: The StudyInstanceUID.
        retrieved: SOP Instance UID → (bytes, dataset) already retrieved; filled in.

    Returns:
        ([(instance, FilmSource, its pydicom dataset or None), ...], the number of result objects left out).

    Raises:
        PacsError: When the PACS has no such study.
    """
    instances = study_instances(client, connection, study_uid)
    if not instances:
        raise PacsError(f"{connection.url} has no study {study_uid} (or nothing in it): check the StudyInstanceUID, or find studies "
                        "with --since DATE, --patient-id or --accession.")
    retrieved = {} if retrieved is None else retrieved
    films = [instance for instance in instances if not instance.is_result]
    listed = []
    for instance in films:
        fields = {"study_uid": instance.study_uid, "series_uid": instance.series_uid}
        reason = instance.refusal()
        if reason:
            listed.append((instance, FilmSource(instance.sop_uid, fields=fields, refusal=reason), None))
            continue
        if instance.sop_uid not in retrieved:
            retrieved[instance.sop_uid] = retrieve_bytes(client, connection, instance)
        data, dataset = retrieved[instance.sop_uid]
        listed.append((instance, FilmSource(instance.sop_uid, data, fields), dataset))
    return listed, len(instances) - len(films)


def predict_study(ensemble, client, connection: PacsConnection, study_uid: str, *, threshold: float | None = None,
                  door: str = "pacs") -> tuple[list[PacsPrediction], int]:
    """Scores a study's films (score_study) and decides each at the threshold (default: the run's operating point).

    Returns:
        (one PacsPrediction per film, its record set, the number of result objects left out).
    """
    predictions, left_out = score_study(ensemble, client, connection, study_uid)
    for prediction in predictions:
        prediction.decide(ensemble, threshold, door=door)
    return predictions, left_out


def operating_point_words(ensemble) -> str:
    """How the run's threshold was chosen, in words, for the report (the Predict page's phrase)."""
    from zoidberg.config import OperatingPointChoice

    choice = (ensemble.operating_point or {}).get("choice")
    method = OperatingPointChoice.from_dict(choice).describe() if choice else (ensemble.run.summary() or {}).get("threshold_method") or "default"
    return f"{method} on the run's out-of-fold predictions ({ensemble.scale} probabilities), threshold {ensemble.threshold:.3f}"


def model_card_reference(ensemble) -> str:
    """Where a report's reader finds the model card: by the run's id and the commands that give it, never a path on this server."""
    run_id = ensemble.run.id
    return (f"Zoidberg run {run_id}: GET /v1/model of `python -m zoidberg serve --run {run_id}`, or model_card.json of "
            f"`python -m zoidberg export --run {run_id}`")


def store_results(ensemble, client, connection: PacsConnection, predictions: list[PacsPrediction], *, model_card: str | None = None) -> list[str]:
    """Writes a report and a Grad-CAM capture for every diagnosed film into its study; refused films get none.

    Args:
        ensemble: The loaded run that predicted.
        client: make_client's client.
        connection: The connection.
        predictions: predict_study's predictions.
        model_card: Where the model card is, written into the report (default: model_card_reference).

    Returns:
        The SOP Instance UIDs written, also added to each record as written_back.
    """
    from zoidberg import __version__
    from zoidberg.data.imaging import downscale
    from zoidberg.inference.explain import overlay_heatmap
    from zoidberg.integrations.dicom_results import make_overlay_capture, make_result_report

    written = []
    for prediction in predictions:
        if not prediction.diagnosed or prediction.source is None:
            continue
        record = prediction.record
        heatmap = ensemble.gradcam(prediction.model_input, record["class_index"])
        overlay = overlay_heatmap(downscale(prediction.gray, CAPTURE_SIDE), heatmap)
        report = make_result_report(prediction.source, record, operating_point=operating_point_words(ensemble),
                                    model_card=model_card or model_card_reference(ensemble),
                                    version=__version__)
        capture = make_overlay_capture(prediction.source, overlay, record)
        store_datasets(client, connection, [report, capture], prediction.instance.study_uid)
        record["written_back"] = [str(report.SOPInstanceUID), str(capture.SOPInstanceUID)]
        written += record["written_back"]
    return written
