"""A site's labels file: one line per label, appended whole or not at all, read back as one label per film."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from zoidberg.data.appending import append_line

LABELS_FORMAT = "zoidberg-labels"
LABELS_VERSION = 1
# What a reader may say of a film; "not_usable" films are kept in the file and left out of every fit.
LABELS = ("normal", "pneumonia", "not_usable")
# A line that takes back the same reader's last label of the film (the Label page's undo).
RETRACTED = "retracted"
# Spellings other tools write, read as the label they mean.
LABEL_SPELLINGS = {
    "normal": "normal", "0": "normal", "negative": "normal",
    "pneumonia": "pneumonia", "1": "pneumonia", "positive": "pneumonia",
    "not_usable": "not_usable", "not usable": "not_usable", "not-usable": "not_usable", "unusable": "not_usable",
    RETRACTED: RETRACTED,
}
# Every column of the file; only `file` (or `sop_uid`) and `label` are required.
COLUMNS = ("file", "label", "reader", "labeled_at", "chosen_by", "reason", "patient", "study_uid", "series_uid", "sop_uid")


class LabelsFileError(ValueError):
    """A labels file that cannot be read; the message names the line and what to change."""


@dataclass(frozen=True)
class LabelEntry:
    """One line of a labels file.

    Attributes:
        file: The film's path (absolute, or relative to the labels file's folder); "" for a PACS
            film known only by its UIDs.
        label: One of LABELS, or RETRACTED.
        reader: Who labeled it (the login's name, or what a script says).
        labeled_at: When, ISO 8601 in UTC.
        chosen_by: How the film was put in front of the reader ("random", "uncertain", "diverse",
            "gate", "manual" ...): adaptation keeps its operating point honest with it.
        reason: The sentence label-next gave for choosing it.
        patient: The patient id (films of one patient never straddle two cross-fit parts); ""
            reads it from the file name as data sets do.
        study_uid, series_uid, sop_uid: The DICOM identifiers of a PACS film.
    """

    file: str
    label: str
    reader: str = ""
    labeled_at: str = ""
    chosen_by: str = ""
    reason: str = ""
    patient: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""

    def __post_init__(self):
        if not self.file and not self.sop_uid:
            raise LabelsFileError("A label needs its film: a file path or a DICOM SOP instance UID.")
        if self.label not in (*LABELS, RETRACTED):
            raise LabelsFileError(f"A label must be one of {', '.join(LABELS)}, not {self.label!r}.")

    @property
    def film(self) -> str:
        """The key that names one film whatever the reader: its SOP instance UID, else its path."""
        return self.sop_uid or self.file


@dataclass(frozen=True)
class SiteLabels:
    """A labels file resolved: each film's one label, and what could not become one.

    Attributes:
        path: The labels file.
        films_folder: Where relative film paths start (the folder of the file the labels were written to).
        digest: SHA-256 of its whole lines (what an adapted run records).
        films: Film key -> the entry that stands (the last of its reader; readers who agree).
        disagreements: Film key -> {reader: label} where readers disagree (left out of fits).
        readers: Film key -> {reader: label} of every film (what the agreement between readers reads).
        uids: The film keys that are SOP Instance UIDs (the rest are paths).
        ignored_lines: Lines that were not read, with why (a torn last line after a crash).
    """

    path: Path
    films_folder: Path
    digest: str
    films: dict[str, LabelEntry] = field(default_factory=dict)
    disagreements: dict[str, dict[str, str]] = field(default_factory=dict)
    readers: dict[str, dict[str, str]] = field(default_factory=dict)
    uids: frozenset = frozenset()
    ignored_lines: list[str] = field(default_factory=list)

    def usable(self) -> list[LabelEntry]:
        """The films labeled normal or pneumonia, in the order first labeled."""
        return [entry for entry in self.films.values() if entry.label in ("normal", "pneumonia")]

    def count(self, label: str) -> int:
        """How many films stand with this label."""
        return sum(entry.label == label for entry in self.films.values())

    def agreement(self) -> dict:
        """How two readers agree on the films both labeled: Cohen's kappa, the share agreed, and the films they disagree on.

        With more than two readers, each film's first two readers are compared.
        """
        from sklearn.metrics import cohen_kappa_score

        pairs = [(film, list(said.values())[:2]) for film, said in self.readers.items() if len(said) >= 2]
        if not pairs:
            return {"n": 0, "kappa": None, "agreed": None, "disagreements": []}
        first, second = [labels[0] for _, labels in pairs], [labels[1] for _, labels in pairs]
        agreed = sum(a == b for a, b in zip(first, second)) / len(pairs)
        kappa = float(cohen_kappa_score(first, second)) if len(set(first) | set(second)) > 1 else 1.0
        return {"n": len(pairs), "kappa": kappa, "agreed": agreed,
                "disagreements": [{"film": film, **self.readers[film]} for film, labels in pairs if labels[0] != labels[1]]}

    def where(self, film: str) -> str:
        """A film key as one string whoever wrote it: a SOP Instance UID as it is, a path made absolute from the films folder."""
        if film in self.uids:
            return film
        path = Path(film).expanduser()
        return str((path if path.is_absolute() else self.films_folder / path).resolve())

    def resolve(self, entry: LabelEntry) -> Path | None:
        """The film's path on this machine (relative paths are read from the labels file's folder), or None."""
        if not entry.file:
            return None
        path = Path(entry.file).expanduser()
        return path if path.is_absolute() else self.films_folder / path


def now_utc() -> str:
    """The time a label is written, ISO 8601 in UTC to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def append_label(path: str | os.PathLike, entry: LabelEntry) -> None:
    """Appends one label as one JSON line, in a single write that is flushed to disk before it returns.

    A crash loses at most this line: a torn line is skipped when the file is read, and the
    next append starts on a line of its own.

    Raises:
        LabelsFileError: The file is a CSV (written by another tool: this tool appends JSON lines only).
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        raise LabelsFileError(f"{path} is a CSV: the tool appends to a JSON-lines labels file (.jsonl); give a new name ending .jsonl.")
    entry = entry if entry.labeled_at else LabelEntry(**{**asdict(entry), "labeled_at": now_utc()})
    append_line(path, json.dumps({"format": LABELS_FORMAT, "version": LABELS_VERSION, **asdict(entry)}, ensure_ascii=False))


def read_labels(path: str | os.PathLike, *, films_folder: str | os.PathLike | None = None) -> SiteLabels:
    """Reads a labels file: this tool's JSON lines, or a CSV with a header row and at least `file` and `label`.

    Args:
        path: The file.
        films_folder: Where relative film paths start (default: the file's folder; a copy kept in
            a run reads its films from the original's folder).

    Raises:
        LabelsFileError: Missing file, an unknown version, a CSV without the required columns,
            or a line with an unknown label (named by its line number).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise LabelsFileError(f"The labels file {path} does not exist: label films with the Label page or `label-next`, or name a CSV with file and label columns.")
    data = path.read_bytes()
    text = data.decode("utf-8-sig", errors="replace")
    is_csv = path.suffix.lower() == ".csv" or not text.lstrip().startswith("{")
    entries, ignored, whole = _read_csv(text, path) if is_csv else _read_json_lines(text, path)
    folder = Path(films_folder).expanduser() if films_folder else path.parent
    return resolve_labels(path, hashlib.sha256(whole.encode("utf-8")).hexdigest(), entries, ignored, films_folder=folder)


def _read_json_lines(text: str, path: Path) -> tuple[list[LabelEntry], list[str], str]:
    entries, ignored, whole = [], [], []
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        torn = number == len(lines)  # no newline after it: the write never finished
        try:
            payload = json.loads(line)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError:
            ignored.append(f"line {number}: {'cut short by an interrupted write' if torn else 'not a JSON object'}, skipped")
            continue
        if torn:
            ignored.append(f"line {number}: cut short by an interrupted write (no line end), skipped")
            continue
        if payload.get("format") not in (None, LABELS_FORMAT) or int(payload.get("version", LABELS_VERSION)) > LABELS_VERSION:
            raise LabelsFileError(f"{path}, line {number}: a labels file of format {payload.get('format')!r} version "
                                  f"{payload.get('version')}; this version of Zoidberg reads {LABELS_FORMAT} version {LABELS_VERSION}.")
        entries.append(_entry(payload, path, number))
        whole.append(line)
    return entries, ignored, "\n".join(whole)


def _read_csv(text: str, path: Path) -> tuple[list[LabelEntry], list[str], str]:
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip().lower() for name in reader.fieldnames or []]
    if "label" not in header or not ({"file", "sop_uid"} & set(header)):
        raise LabelsFileError(f"{path} needs a header row with the columns file and label (found: {', '.join(header) or 'nothing'}).")
    reader.fieldnames = header
    entries = [_entry(row, path, number) for number, row in enumerate(reader, start=2) if any((value or "").strip() for value in row.values())]
    return entries, [], text


def _entry(payload: dict, path: Path, number: int) -> LabelEntry:
    spelled = str(payload.get("label") or "").strip().lower()
    label = LABEL_SPELLINGS.get(spelled)
    if label is None:
        raise LabelsFileError(f"{path}, line {number}: label {payload.get('label')!r} is not one of {', '.join(LABELS)}.")
    values = {name: str(payload.get(name) or "").strip() for name in COLUMNS if name != "label"}
    try:
        return LabelEntry(label=label, **values)
    except LabelsFileError as error:
        raise LabelsFileError(f"{path}, line {number}: {error}") from None


def resolve_labels(path: Path, digest: str, entries: Iterable[LabelEntry], ignored: list[str] | None = None, *,
                   films_folder: Path | None = None) -> SiteLabels:
    """Each film's standing label: a reader's last word on it counts (a retraction removes it); readers who disagree leave it out."""
    by_reader: dict[str, dict[str, LabelEntry]] = {}
    uids = set()
    for entry in entries:
        if entry.sop_uid:
            uids.add(entry.sop_uid)
        readers = by_reader.setdefault(entry.film, {})
        if entry.label == RETRACTED:
            readers.pop(entry.reader, None)
        else:
            readers.pop(entry.reader, None)  # re-inserted last: the order of first labeling is kept by the film
            readers[entry.reader] = entry
    films, disagreements = {}, {}
    for film, readers in by_reader.items():
        if not readers:
            continue
        said = {entry.label for entry in readers.values()}
        if len(said) > 1:
            disagreements[film] = {reader or "(unnamed)": entry.label for reader, entry in readers.items()}
        else:
            films[film] = next(iter(readers.values()))
    said_by = {film: {reader: entry.label for reader, entry in readers.items()} for film, readers in by_reader.items() if readers}
    return SiteLabels(path, films_folder or path.parent, digest, films, disagreements, said_by, frozenset(uids), list(ignored or []))
