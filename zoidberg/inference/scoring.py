"""The one prediction function: films from any door (files, uploads, a PACS study, a request body) to scored films and records."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from zoidberg.inference.batch import decode_for_run, score_decoded
from zoidberg.inference.gating import gate_fields
from zoidberg.inference.record import make_record

# Decoded images held at once: bounds memory on folders of thousands of files.
SCORING_CHUNK = 256
# The doors a film comes through, named in its record.
DOORS = ("cli", "page", "pacs", "http", "label")


@dataclass(frozen=True)
class FilmSource:
    """One film as a door hands it over, before anything is read.

    Attributes:
        name: What the record calls it (`file`): a path, an upload's name, a SOP Instance UID.
        data: A path or the file's bytes; None when `refusal` or `error` settles it unread.
        fields: More record fields that name it (study_uid, series_uid, true_label).
        refusal: Why it is refused before its pixels are read (what a PACS's header says).
        error: Why it cannot be used at all (an upload over the size limit, a file that vanished).
    """

    name: str
    data: bytes | str | Path | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    refusal: str | None = None
    error: str | None = None


@dataclass
class ScoredFilm:
    """What a run says of one film, before any threshold: every door's records are drawn from it.

    Attributes:
        source: The film as handed over.
        scored_at: When it was scored (UTC, ISO 8601).
        gray: The decoded film (kept only on request: Grad-CAM overlays and write-back need it).
        header: What a DICOM header says of itself (DicomFacts), else None.
        model_input: The image as the run starts from it.
        prediction: The threshold-free Prediction, or None.
        verdict: The gate's verdict, or None (no gate).
        error: Why it could not be scored, else None.
    """

    source: FilmSource
    scored_at: str
    gray: np.ndarray | None = field(default=None, repr=False)
    header: Any = None
    model_input: np.ndarray | None = field(default=None, repr=False)
    prediction: Any = None
    verdict: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the film was scored (refused or not)."""
        return self.error is None and (self.prediction is not None or self.source.refusal is not None)

    @property
    def refused(self) -> bool:
        """Whether the gate (or the header) refused it: it gets no diagnosis."""
        return self.source.refusal is not None or (self.verdict is not None and not self.verdict.in_distribution)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def score_films(ensemble, sources: Sequence[FilmSource], *, tta: bool | None = None, keep_images: bool = False,
                progress: Callable[[int, int], None] | None = None) -> list[ScoredFilm]:
    """Decodes, scores and gates films in batches; a film that cannot be used costs only itself.

    Args:
        ensemble: A loaded run (zoidberg.inference.loading.load_ensemble).
        sources: The films.
        tta: Test-time augmentation (default: the run's setting).
        keep_images: Keep each decoded film (for Grad-CAM overlays and captures).
        progress: Called as progress(done, total) after every chunk.

    Returns:
        One ScoredFilm per source, in order.
    """
    from concurrent.futures import ThreadPoolExecutor

    from zoidberg.data.dicom_facts import read_dicom_facts

    def decode(source: FilmSource) -> tuple[np.ndarray | None, str | None, Any]:
        if source.error or source.refusal or source.data is None:
            return None, source.error, None
        gray, error = decode_for_run(source.data, name=source.name, image_size=getattr(ensemble, "image_size", None))
        return gray, error, read_dicom_facts(source.data) if gray is not None else None

    films: list[ScoredFilm] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(sources), SCORING_CHUNK):
            chunk = list(sources[start : start + SCORING_CHUNK])
            decoded = list(pool.map(decode, chunk))
            good = [index for index, (gray, _, _) in enumerate(decoded) if gray is not None]
            scored = dict(zip(good, score_decoded(ensemble, [decoded[index][0] for index in good],
                                                  headers=[decoded[index][2] for index in good], tta=tta))) if good else {}
            stamp = _now()
            for index, source in enumerate(chunk):
                gray, error, header = decoded[index]
                film = ScoredFilm(source, stamp, gray if keep_images else None, header, error=error)
                if index in scored:
                    item = scored[index]
                    film.model_input, film.prediction, film.verdict, film.error = item.model_input, item.prediction, item.verdict, item.error
                films.append(film)
            if progress:
                progress(min(start + SCORING_CHUNK, len(sources)), len(sources))
    return films


def record_of(ensemble, film: ScoredFilm, threshold: float | None = None, scale: str | None = None, *, door: str,
              tta: bool | None = None) -> dict:
    """A scored film's prediction record at a threshold: the one place a film gets its diagnosis, or none.

    Args:
        ensemble: The run that scored it.
        film: score_films' film.
        threshold: The decision threshold (default: the run's operating point).
        scale: "raw" or "calibrated" (default: the run's).
        door: How the film came: one of DOORS.
        tta: Whether test-time variants were averaged (default: the run's setting).

    Returns:
        The versioned record (zoidberg.inference.record); a refused film's diagnosis fields are null.
    """
    from zoidberg.data.dicom_facts import HEADER_SCORE

    if door not in DOORS:
        raise ValueError(f"Unknown door {door!r}: use one of {', '.join(DOORS)}.")
    row: dict[str, Any] = {"file": film.source.name, **film.source.fields}
    if film.source.refusal is not None:
        row.update(in_distribution=False, ood_score=HEADER_SCORE, ood_reason=film.source.refusal)
    elif not film.ok:
        row["error"] = film.error or "not predicted"
    else:
        row.update(ensemble.decide(film.prediction, threshold, scale).to_dict(), **gate_fields(film.verdict),
                   tta=ensemble.tta if tta is None else tta)
        if row.get("true_label") is not None:
            row["correct"] = row["label"] == row["true_label"]
    if film.model_input is not None:
        row.update(film_exposure(film.model_input))
    return make_record(row, run_id=ensemble.run.id, predicted_at=film.scored_at, door=door)


def film_exposure(model_input: np.ndarray) -> dict:
    """The film's gray levels in two numbers (mean and standard deviation, 0-255): how the monitor tells acquisitions apart."""
    values = np.asarray(model_input, dtype=np.float32)
    return {"pixel_mean": round(float(values.mean()), 2), "pixel_std": round(float(values.std()), 2)}


def predict_sources(ensemble, sources: Sequence[FilmSource], *, door: str, threshold: float | None = None,
                    tta: bool | None = None, progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Films to records: decode, gate, score, decide, record. Every door that does not redraw its threshold calls this.

    Args:
        ensemble: A loaded run.
        sources: The films.
        door: How they came: one of DOORS.
        threshold: The decision threshold (default: the run's operating point).
        tta: Test-time augmentation (default: the run's setting).
        progress: Called as progress(done, total) after every chunk.

    Returns:
        One record per film, in order.
    """
    films = score_films(ensemble, sources, tta=tta, progress=progress)
    return [record_of(ensemble, film, threshold, door=door, tta=tta) for film in films]


def file_sources(paths: Sequence, *, label_mode: str | None = None) -> list[FilmSource]:
    """Files as sources, each with the class its NORMAL/PNEUMONIA folder names when label_mode is given."""
    from zoidberg.data.files import label_from_path

    sources = []
    for path in paths:
        true_label = label_from_path(path, label_mode) if label_mode else None
        sources.append(FilmSource(str(path), path, {"true_label": true_label} if true_label is not None else {}))
    return sources


def predict_files(ensemble, paths: Sequence, *, door: str = "cli", threshold: float | None = None, tta: bool | None = None,
                  label_mode: str | None = None, progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Image files to records (predict_sources on file_sources): the CLI's and the Label page's folders."""
    return predict_sources(ensemble, file_sources(paths, label_mode=label_mode), door=door, threshold=threshold, tta=tta,
                           progress=progress)
