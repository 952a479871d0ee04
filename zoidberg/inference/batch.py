"""Prediction of many image files in batches: a file that cannot be read costs only its own row."""

from __future__ import annotations

from collections.abc import Sequence

from zoidberg.data.imaging import decode_grayscale
from zoidberg.inference.gating import gate_fields

# Decoded images held at once by predict_files: bounds memory on folders of thousands of files.
PREDICT_CHUNK = 256


def predict_files(
    ensemble, paths: Sequence, *, threshold: float | None = None, tta: bool | None = None, label_mode: str | None = None, progress=None
) -> list[dict]:
    """Predicts many image files in batches; a file that cannot be read costs only its own row.

    Args:
        ensemble: A loaded Ensemble or EnsembleOfRuns.
        paths: Image files (see zoidberg.data.files.collect_images for folders).
        threshold: The decision threshold (default: the run's operating point).
        tta: Test-time augmentation (default: the run's setting).
        label_mode: When given, the true class is read from NORMAL/PNEUMONIA folders.
        progress: Called as progress(done, total) after every chunk of images.

    Returns:
        One row per file: file, the Decision's fields (label is the predicted class), the gate's
        in_distribution, ood_score and ood_reason,
        true_label and correct where the folder names the class, or error.
    """
    from concurrent.futures import ThreadPoolExecutor

    from zoidberg.data.files import label_from_path
    from zoidberg.data.imaging import ImageDecodeError

    from zoidberg.data.dicom_facts import read_dicom_facts

    def decode(path):
        try:
            return decode_grayscale(path, name=str(path), draft_size=ensemble.image_size), None
        except ImageDecodeError as error:
            return None, str(error)
        except OSError as error:
            return None, f"cannot read: {error.strerror or error}"

    rows: list[dict] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(paths), PREDICT_CHUNK):
            chunk = list(paths[start : start + PREDICT_CHUNK])
            decoded = list(pool.map(decode, chunk))
            good = [index for index, (gray, _) in enumerate(decoded) if gray is not None]
            # Resized once for the models and the gate (a resize to the same size is free).
            grays = [ensemble.resized(decoded[index][0]) for index in good]
            predictions = dict(zip(good, ensemble.predictions_of(grays, tta=tta)))
            headers = [read_dicom_facts(chunk[index]) for index in good]
            verdicts = dict(zip(good, ensemble.gate_verdicts(grays, headers=headers)))
            for index, path in enumerate(chunk):
                row: dict = {"file": str(path)}
                true_label = label_from_path(path, label_mode) if label_mode else None
                if true_label is not None:
                    row["true_label"] = true_label
                if index in predictions:
                    decision = ensemble.decide(predictions[index], threshold)
                    row.update(decision.to_dict())
                    row.update(gate_fields(verdicts[index]))
                    if true_label is not None:
                        row["correct"] = decision.label == true_label
                else:
                    row["error"] = decoded[index][1]
                rows.append(row)
            if progress:
                progress(min(start + PREDICT_CHUNK, len(paths)), len(paths))
    return rows
