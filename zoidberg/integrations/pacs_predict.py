"""A study in a PACS predicted as files are: CR/DX frontal films scored and gated, the rest given a reason, results written back on request."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zoidberg.data.dicom_facts import HEADER_SCORE
from zoidberg.inference.record import REFUSED, make_record
from zoidberg.integrations.dicomweb import PacsConnection, PacsError, PacsInstance, retrieve_bytes, store_datasets, study_instances

# The long side of the Grad-CAM capture written back.
CAPTURE_SIDE = 1024


@dataclass
class PacsPrediction:
    """One instance of a study, predicted or given its reason.

    Attributes:
        instance: Its UIDs and header facts.
        record: Its prediction record (file is the SOP Instance UID; study_uid and series_uid added).
        source: The retrieved pydicom dataset (None when it was refused by its header, unread).
        gray: The decoded film (None when not retrieved or unreadable).
        model_input: The film as the network saw it.
    """

    instance: PacsInstance
    record: dict
    source: object = None
    gray: np.ndarray | None = field(default=None, repr=False)
    model_input: np.ndarray | None = field(default=None, repr=False)

    @property
    def diagnosed(self) -> bool:
        """Whether it has a finding (scored and not refused)."""
        return self.record.get("prediction") not in (None, REFUSED)


def predict_study(ensemble, client, connection: PacsConnection, study_uid: str, *, threshold: float | None = None) -> tuple[list[PacsPrediction], int]:
    """Predicts every film of a study; reads only (nothing is written to the PACS).

    A CT, an MR, a side view or an adult's film is refused by what the search says of it,
    before its pixels are retrieved; reports and captures (Zoidberg's own results among
    them) are left out. The rest is retrieved, decoded (modality and VOI LUTs,
    MONOCHROME1) and scored in one batch, then gated, as predict does with files.

    Args:
        ensemble: A loaded run.
        client: make_client's client.
        connection: The connection (for messages).
        study_uid: The StudyInstanceUID.
        threshold: The decision threshold (default: the run's operating point).

    Returns:
        (one PacsPrediction per film, the number of result objects left out).
    """
    from zoidberg.data.dicom_facts import read_dicom_facts
    from zoidberg.inference.batch import decided_row, decode_for_run, score_decoded

    threshold = ensemble.threshold if threshold is None else threshold
    instances = study_instances(client, connection, study_uid)
    if not instances:
        raise PacsError(f"{connection.url} has no study {study_uid} (or nothing in it): check the StudyInstanceUID, or find studies "
                        "with --since DATE, --patient-id or --accession.")
    films = [instance for instance in instances if not instance.is_result]
    predictions, to_score = [], []
    for instance in films:
        base = _identity(instance)
        reason = instance.refusal()
        if reason:
            row = {**base, "in_distribution": False, "ood_score": HEADER_SCORE, "ood_reason": reason}
            predictions.append(PacsPrediction(instance, make_record(row, run_id=ensemble.run.id, keep_refused_scores=False)))
            continue
        data, source = retrieve_bytes(client, connection, instance)
        gray, error = decode_for_run(data, name=instance.sop_uid, image_size=ensemble.image_size)
        prediction = PacsPrediction(instance, {}, source, gray)
        if gray is None:
            prediction.record = make_record({**base, "error": error}, run_id=ensemble.run.id)
        else:
            to_score.append((prediction, read_dicom_facts(data)))
        predictions.append(prediction)
    scored = score_decoded(ensemble, [prediction.gray for prediction, _ in to_score], headers=[facts for _, facts in to_score]) if to_score else []
    for (prediction, _), result in zip(to_score, scored):
        prediction.model_input = result.model_input
        row = decided_row(ensemble, result, threshold, **_identity(prediction.instance))
        prediction.record = make_record(row if "error" in row else {**row, "tta": ensemble.tta}, run_id=ensemble.run.id,
                                        keep_refused_scores=False)
    return predictions, len(instances) - len(films)


def _identity(instance: PacsInstance) -> dict:
    """The record fields that name a PACS film: its SOP Instance UID as `file`, its study and series."""
    return {"file": instance.sop_uid, "study_uid": instance.study_uid, "series_uid": instance.series_uid}


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
