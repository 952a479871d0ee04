"""What a DICOM file says of itself (modality, body part, view, the patient's age), and the refusals it settles alone."""

from __future__ import annotations

import datetime as dt
import io
import os
from dataclasses import dataclass

from zoidberg.data.ood import GateVerdict

# Radiographs the model reads: computed and digital radiography.
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR")
# ViewPosition values of a side (lateral) or decubitus view (DICOM PS3.3, C.8.11.5 and common variants).
SIDE_VIEWS = ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD", "RLO", "LLO")
# The model learned from children aged 1 to 5: a patient at least this old is outside what it knows.
ADULT_AGE_YEARS = 18
# ood_score of a refusal the file's own header settles (no distance was measured).
HEADER_SCORE = 100.0


@dataclass(frozen=True)
class DicomFacts:
    """The header fields that decide whether a film is one the model may read.

    Attributes:
        modality: Modality (CR, DX, CT ...), or "".
        body_part: BodyPartExamined, upper case, or "".
        view_position: ViewPosition (PA, AP, LL ...), upper case, or "".
        age_years: The patient's age in years (PatientAge, else birth date against study date), or None.
    """

    modality: str = ""
    body_part: str = ""
    view_position: str = ""
    age_years: float | None = None


def _age_years(dataset) -> float | None:
    """PatientAge, else PatientBirthDate against StudyDate (or AcquisitionDate), or None."""
    return age_from_fields(str(dataset.get("PatientAge", "") or ""), str(dataset.get("PatientBirthDate", "") or ""),
                           str(dataset.get("StudyDate", "") or dataset.get("AcquisitionDate", "") or ""))


def age_from_fields(age: str, birth: str, study: str) -> float | None:
    """The age in years from PatientAge ("045Y", "018M", "003W", "010D"), else birth date against study date, or None.

    Shared by a file's header and a DICOMweb search's answer, which carry the same fields.
    """
    text = age.strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text[3] in "YMWD":
        return int(text[:3]) / {"Y": 1, "M": 12, "W": 52.18, "D": 365.25}[text[3]]
    try:
        born, seen = dt.datetime.strptime(birth[:8], "%Y%m%d"), dt.datetime.strptime(study[:8], "%Y%m%d")
    except ValueError:
        return None
    return (seen - born).days / 365.25 if seen >= born else None


def read_dicom_facts(source) -> DicomFacts | None:
    """The header facts of a DICOM file (path or bytes), or None for anything that is not DICOM or cannot be read.

    Reads the header only (stops before the pixels).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(os.fspath(source), "rb")
    except (OSError, TypeError):
        return None
    try:
        with handle:
            dataset = pydicom.dcmread(handle, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError, TypeError):
        return None

    def text(keyword: str) -> str:
        return str(dataset.get(keyword, "") or "").strip().upper()

    return DicomFacts(text("Modality"), text("BodyPartExamined"), text("ViewPosition"), _age_years(dataset))


def facts_verdict(facts: DicomFacts | None) -> GateVerdict | None:
    """The refusal a file's own header settles, or None: another modality or body part, a side view, an adult.

    Absent fields settle nothing (many exports leave them empty); the image checks still run.
    """
    if facts is None:
        return None
    if facts.modality and facts.modality not in RADIOGRAPH_MODALITIES:
        return GateVerdict(False, HEADER_SCORE, f"The file says its modality is {facts.modality}: only radiographs "
                                                f"({', '.join(RADIOGRAPH_MODALITIES)}) of the chest are read, so no diagnosis.")
    if facts.body_part and "CHEST" not in facts.body_part and "THORAX" not in facts.body_part:
        return GateVerdict(False, HEADER_SCORE, f"The file says the body part is {facts.body_part}, not the chest: no diagnosis.")
    if facts.view_position in SIDE_VIEWS:
        return GateVerdict(False, HEADER_SCORE, f"The file says this is a side view (ViewPosition {facts.view_position}); the model "
                                                "learned from frontal films only, so no diagnosis.")
    if facts.age_years is not None and facts.age_years >= ADULT_AGE_YEARS:
        return GateVerdict(False, HEADER_SCORE, f"The file says the patient is {facts.age_years:.0f} years old: outside the children "
                                                "aged 1 to 5 the model learned from, so no diagnosis.")
    return None
