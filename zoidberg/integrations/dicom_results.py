"""A prediction written back as DICOM (highdicom): a Structured Report of the finding and a Secondary Capture of its Grad-CAM."""

from __future__ import annotations

import numpy as np

from zoidberg.inference.record import REFUSED

MANUFACTURER = "Zoidberg 2.0 (open source, research and teaching)"
# Said in the report and burnt into the capture: what every result written back is for.
DISCLAIMER = "Research and teaching, not for diagnosis"
# Zoidberg's own concepts, in a private coding scheme (DICOM PS3.16 8.2: a local scheme designator starts with 99).
SCHEME = "99ZOIDBERG"
SERIES_NUMBER_REPORT, SERIES_NUMBER_CAPTURE = 9901, 9902


def _concept(value: str, meaning: str, scheme: str = SCHEME):
    from highdicom.sr import CodedConcept

    return CodedConcept(value, scheme, meaning)


# Standard concepts where DICOM and SNOMED CT have them.
FINDING = ("121071", "DCM", "Finding")
ALGORITHM_NAME = ("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = ("111003", "DCM", "Algorithm Version")
FINDINGS = {"pneumonia": ("233604007", "SCT", "Pneumonia"), "normal": ("17621005", "SCT", "Normal")}
# Zoidberg's own.
PROBABILITY = ("P-PNEUMONIA", "Probability of pneumonia")
PROBABILITY_RAW = ("P-PNEUMONIA-RAW", "Probability of pneumonia before calibration")
THRESHOLD = ("THRESHOLD", "Decision threshold")
OPERATING_POINT = ("OPERATING-POINT", "Operating point")
RUN_ID = ("RUN-ID", "Zoidberg run id")
MODEL_CARD = ("MODEL-CARD", "Model card")
INTENDED_USE = ("INTENDED-USE", "Intended use")
GATE = ("GATE", "Out-of-distribution gate")
REPORT_TITLE = ("18748-4", "LN", "Diagnostic imaging report")


# Patient and study attributes a result copies from its film: DICOM lets a film leave them empty (type 2), highdicom reads them.
TYPE_2_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName",
                     "StudyID", "AccessionNumber")


def with_type_2_attributes(source):
    """A copy of the film's dataset with every empty-allowed patient and study attribute present (empty where absent)."""
    import copy

    complete = copy.copy(source)
    for keyword in TYPE_2_ATTRIBUTES:
        if keyword not in complete:
            setattr(complete, keyword, "")
    return complete


def _code(triple):
    from highdicom.sr import CodedConcept

    value, scheme, meaning = triple
    return CodedConcept(value, scheme, meaning)


def result_uid(source, record: dict, kind: str) -> str:
    """A result's UID, the same every time one run writes the same kind of result for the same film (or study, for a series).

    Writing a study's results again stores the same instances, which the PACS keeps once: --store-results is idempotent.
    """
    from pydicom.uid import generate_uid

    film = "" if kind.endswith("series") else str(source.SOPInstanceUID)
    return generate_uid(entropy_srcs=["zoidberg", str(record["run_id"]), str(source.StudyInstanceUID), film, kind])


def make_result_report(source, record: dict, *, operating_point: str, model_card: str, version: str):
    """The prediction of one film as a Comprehensive SR in the film's study, with the film as its evidence.

    Args:
        source: The film's pydicom dataset (patient, study and evidence come from it).
        record: Its prediction record (zoidberg.inference.record), not refused.
        operating_point: How the threshold was chosen, in words.
        model_card: Where the model card is (the service's /v1/model, or the run's folder).
        version: Zoidberg's version.

    Returns:
        The highdicom ComprehensiveSR.
    """
    import highdicom as hd
    from highdicom.sr import CodeContentItem, ContainerContentItem, NumContentItem, TextContentItem
    from pydicom.sr.codedict import codes

    if record.get("prediction") in (None, REFUSED):
        raise ValueError("A refused or failed prediction has no finding to report.")
    unit = codes.UCUM.NoUnits if hasattr(codes.UCUM, "NoUnits") else hd.sr.CodedConcept("1", "UCUM", "no units")
    probability = record["probability_calibrated"] if record.get("probability_calibrated") is not None else record["probability"]
    finding = FINDINGS.get(str(record["label"]).lower(), (str(record["label"]).upper(), SCHEME, str(record["label"])))
    items = [
        TextContentItem(_code(ALGORITHM_NAME), "Zoidberg", relationship_type="HAS OBS CONTEXT"),
        TextContentItem(_code(ALGORITHM_VERSION), version, relationship_type="HAS OBS CONTEXT"),
        CodeContentItem(_code(FINDING), _code(finding), relationship_type="CONTAINS"),
        NumContentItem(_concept(*PROBABILITY), float(probability), unit, relationship_type="CONTAINS"),
        NumContentItem(_concept(*PROBABILITY_RAW), float(record["probability_raw"]), unit, relationship_type="CONTAINS"),
        NumContentItem(_concept(*THRESHOLD), float(record["threshold"]), unit, relationship_type="CONTAINS"),
        TextContentItem(_concept(*OPERATING_POINT), operating_point, relationship_type="CONTAINS"),
        TextContentItem(_concept(*GATE), "passed" if record.get("in_distribution") else "not checked (the run has no gate)",
                        relationship_type="CONTAINS"),
        TextContentItem(_concept(*RUN_ID), record["run_id"], relationship_type="CONTAINS"),
        TextContentItem(_concept(*MODEL_CARD), model_card, relationship_type="CONTAINS"),
        TextContentItem(_concept(*INTENDED_USE), DISCLAIMER, relationship_type="CONTAINS"),
    ]
    source = with_type_2_attributes(source)
    container = ContainerContentItem(_code(REPORT_TITLE))
    container.ContentSequence = items
    report = hd.sr.ComprehensiveSR(
        evidence=[source], content=container, series_instance_uid=result_uid(source, record, "report series"), series_number=SERIES_NUMBER_REPORT,
        sop_instance_uid=result_uid(source, record, "report"), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        series_description=f"Zoidberg prediction ({DISCLAIMER.lower()})",
    )
    # UTF-8: without it the text is written as plain ASCII and "sensitivity ≥ 95 %" loses its "≥".
    report.SpecificCharacterSet = "ISO_IR 192"
    return report


# A capture narrower than this is enlarged first, so that its burnt-in words stay legible.
MIN_CAPTURE_WIDTH = 640


def _wrapped(draw, text: str, font, width: int) -> list[str]:
    """The text in lines that fit `width` pixels, broken between words."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return [*lines, line] if line else lines


def burn_in_disclaimer(picture: np.ndarray, lines: list[str]) -> np.ndarray:
    """The RGB picture (enlarged to MIN_CAPTURE_WIDTH if narrower) with a dark band at its foot carrying the lines, the disclaimer first."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8))
    if image.width < MIN_CAPTURE_WIDTH:
        scale = MIN_CAPTURE_WIDTH / image.width
        image = image.resize((MIN_CAPTURE_WIDTH, round(image.height * scale)), Image.Resampling.BILINEAR)
    size = max(14, image.width // 36)
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:  # Pillow's own font where DejaVu is not installed.
        font = ImageFont.load_default(size)
    measure = ImageDraw.Draw(image)
    rows = [(index, row) for index, line in enumerate(lines) for row in _wrapped(measure, line, font, image.width - 12)]
    band = (size + 6) * len(rows) + 8
    framed = Image.new("RGB", (image.width, image.height + band), (0, 0, 0))
    framed.paste(image, (0, 0))
    draw = ImageDraw.Draw(framed)
    for position, (index, row) in enumerate(rows):
        draw.text((6, image.height + 4 + position * (size + 6)), row, fill=(255, 255, 0) if index == 0 else (255, 255, 255), font=font)
    return np.asarray(framed)


def make_overlay_capture(source, overlay: np.ndarray, record: dict):
    """The Grad-CAM overlay as a Secondary Capture in the film's study and patient, the disclaimer burnt in.

    Args:
        source: The film's pydicom dataset.
        overlay: The uint8 RGB overlay (zoidberg.inference.explain).
        record: Its prediction record.

    Returns:
        The highdicom SCImage (BurnedInAnnotation YES).
    """
    import highdicom as hd

    picture = burn_in_disclaimer(overlay, [f"{DISCLAIMER.upper()}.", capture_caption(record)])
    capture = hd.sc.SCImage.from_ref_dataset(
        with_type_2_attributes(source), picture, photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
        series_instance_uid=result_uid(source, record, "capture series"), series_number=SERIES_NUMBER_CAPTURE,
        sop_instance_uid=result_uid(source, record, "capture"), instance_number=1,
        manufacturer=MANUFACTURER, patient_orientation=("L", "F"), series_description=f"Zoidberg Grad-CAM ({DISCLAIMER.lower()})",
    )
    capture.BurnedInAnnotation = "YES"
    return capture


def capture_caption(record: dict) -> str:
    """The capture's line: the finding, and the probability on the scale its threshold applies to (never one scale beside the other's threshold)."""
    return (f"Zoidberg run {record['run_id']}: {record['label']} (P(pneumonia) {record['probability']:.3f} {record.get('scale') or 'raw'}, "
            f"threshold {record['threshold']:.3f} on that scale). Grad-CAM.")


def read_result_report(dataset) -> dict:
    """What a stored report says, read back by concept: finding, probabilities, threshold, run id, intended use."""
    values: dict = {}
    for item in dataset.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "NUM":
            values[name] = float(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "TEXT":
            values[name] = str(item.TextValue)
        elif item.ValueType == "CODE":
            values[name] = str(item.ConceptCodeSequence[0].CodeMeaning)
    return values
