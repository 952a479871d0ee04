"""Deterministic synthetic chest X-ray demo data set in the Kaggle layout and naming scheme."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from zoidberg.data.demo_drawing import Anatomy, random_anatomy, render

# Bumped whenever the images change, so that ensure_demo_dataset regenerates old copies.
DEMO_VERSION = 1
MARKER_NAME = "SYNTHETIC.md"
SPLITS = ("train", "val", "test")
CLASS_DIRS = ("NORMAL", "PNEUMONIA")
FINDINGS = ("normal", "bacteria", "virus")
JPEG_QUALITY = 90

# Share of each finding's patients that goes to test and to val; the rest is train.
TEST_FRACTION = 0.17
VAL_FRACTION = 0.06

# Share of normal patients named NORMAL2-IM-XXXX (the second batch of the real data).
NORMAL2_FRACTION = 0.35

_MARKER_TEXT = """# Synthetic demo data: NOT real chest X-rays

Every image in this folder was drawn by `zoidberg.demo` from random numbers. They only
look vaguely like pediatric chest radiographs (dark background, two lung fields, spine,
heart, ribs, noise) so that the dashboard can be tried without downloading data.

- NORMAL: clear lungs.
- PNEUMONIA `personN_bacteria_M.jpeg`: one dense lobar consolidation in one lung.
- PNEUMONIA `personN_virus_M.jpeg`: diffuse bilateral streaky haze around the hila.

Models trained here learn these drawings, not medicine: never use them on patients.
The layout and file names follow the Kaggle "Chest X-Ray Images (Pneumonia)" data set
(`train/ val/ test/`, `NORMAL/ PNEUMONIA/`), with several images per patient and each
patient in one split only.

version: {version}
images: {images}
parameters: {parameters}
"""


@dataclasses.dataclass(frozen=True)
class _Patient:
    """One synthetic patient: file-name stem pieces, split and image count."""

    finding: str
    number: int
    normal2: bool
    split: str
    image_count: int
    anatomy: Anatomy

    @property
    def class_dir(self) -> str:
        """Returns the Kaggle class folder for this patient's finding."""
        return "NORMAL" if self.finding == "normal" else "PNEUMONIA"


# --------------------------------------------------------------------------- public API


def make_demo_dataset(
    out_dir: str | os.PathLike,
    *,
    patients_per_class: int = 24,
    images_per_patient: tuple[int, int] = (1, 4),
    image_size: int = 128,
    random_state: int = 0,
) -> Path:
    """Writes the synthetic demo data set in the Kaggle layout.

    The folder gets `{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg` (grayscale JPEG) named
    like the real data (`IM-XXXX-YYYY.jpeg`, `NORMAL2-IM-XXXX-YYYY.jpeg`,
    `personN_bacteria_M.jpeg`, `personN_virus_M.jpeg`) and a `SYNTHETIC.md` marker.
    The same arguments always give byte-identical files.

    Args:
        out_dir: Folder to write; created if missing. It must be empty or hold an
            earlier synthetic data set, which is replaced.
        patients_per_class: Patients for each of normal, bacterial and viral
            pneumonia (so PNEUMONIA has twice as many patients as NORMAL, an
            imbalance like the real data's).
        images_per_patient: Smallest and largest number of images per patient, inclusive.
        image_size: Side of the square images in pixels.
        random_state: Seed of everything random.

    Returns:
        The data set root, `out_dir` as a Path.

    Raises:
        ValueError: An argument is out of range.
        FileExistsError: `out_dir` holds files that are not a synthetic data set.
    """
    _validate_arguments(patients_per_class, images_per_patient, image_size)
    root = Path(out_dir)
    _prepare_output_folder(root)
    patients = _plan_patients(patients_per_class, images_per_patient, random_state)
    image_count = _write_images(root, patients, image_size, random_state)
    parameters = {
        "patients_per_class": patients_per_class,
        "images_per_patient": list(images_per_patient),
        "image_size": image_size,
        "random_state": random_state,
    }
    _write_marker(root, image_count, parameters)
    return root


def render_demo_image(finding: str, image_size: int = 128, random_state: int = 0) -> np.ndarray:
    """Draws one synthetic chest X-ray, e.g. for examples and tests.

    Args:
        finding: "normal", "bacteria" or "virus".
        image_size: Side of the square image in pixels.
        random_state: Seed of the patient's anatomy and the image's noise.

    Returns:
        uint8 array of shape (image_size, image_size).
    """
    if finding not in FINDINGS:
        raise ValueError(f"finding must be one of {', '.join(FINDINGS)}, not {finding!r}.")
    rng = np.random.default_rng(random_state)
    return render(random_anatomy(finding, rng), image_size, rng)


def is_synthetic_dataset(root: str | os.PathLike) -> bool:
    """Tells whether a data set root holds the synthetic-data marker file.

    Args:
        root: Data set root folder.

    Returns:
        True when `root/SYNTHETIC.md` exists.
    """
    return (Path(root) / MARKER_NAME).is_file()


def default_demo_dir() -> Path:
    """Returns where the demo data set lives by default.

    Returns:
        `$ZOIDBERG_DEMO_DIR` when set, else `~/.cache/zoidberg/demo-data`.
    """
    configured = os.environ.get("ZOIDBERG_DEMO_DIR", "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "zoidberg" / "demo-data"


def ensure_demo_dataset(path: str | os.PathLike | None = None) -> Path:
    """Returns a complete demo data set, generating it with default arguments if needed.

    Generation happens in a temporary sibling folder that is renamed into place, so
    that two processes generating at once never leave a half-written data set.

    Args:
        path: Data set root; `default_demo_dir()` when None.

    Returns:
        The data set root.
    """
    root = Path(path) if path is not None else default_demo_dir()
    if _is_complete(root):
        return root
    _refuse_foreign_folder(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        make_demo_dataset(staging)
        _move_into_place(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


# --------------------------------------------------------------------------- folders


def _validate_arguments(patients_per_class: int, images_per_patient: tuple[int, int], image_size: int) -> None:
    """Raises ValueError for arguments that cannot give a usable data set."""
    if not isinstance(patients_per_class, int) or patients_per_class < 3:
        raise ValueError(
            f"patients_per_class must be at least 3 (one per split), not {patients_per_class!r}."
        )
    low, high = images_per_patient
    if not 1 <= low <= high:
        raise ValueError(f"images_per_patient must be (low, high) with 1 <= low <= high, not {images_per_patient!r}.")
    if not isinstance(image_size, int) or not 16 <= image_size <= 4096:
        raise ValueError(f"image_size must be from 16 to 4096 pixels, not {image_size!r}.")


def _refuse_foreign_folder(root: Path) -> None:
    """Raises FileExistsError when `root` holds files that a generation did not write."""
    if root.exists() and (not root.is_dir() or any(root.iterdir())) and not is_synthetic_dataset(root):
        raise FileExistsError(
            f"{root} is not empty and is not a synthetic demo data set; choose an empty folder."
        )


def _prepare_output_folder(root: Path) -> None:
    """Creates `root`, or clears an earlier synthetic data set in it."""
    _refuse_foreign_folder(root)
    if root.exists() and any(root.iterdir()):
        # Only what an earlier generation wrote is removed, never other files.
        for split in SPLITS:
            shutil.rmtree(root / split, ignore_errors=True)
        (root / MARKER_NAME).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def _write_marker(root: Path, image_count: int, parameters: dict) -> None:
    """Writes SYNTHETIC.md last, so that its presence means generation finished."""
    text = _MARKER_TEXT.format(version=DEMO_VERSION, images=image_count, parameters=parameters)
    (root / MARKER_NAME).write_text(text, encoding="utf-8")


def _read_marker_field(root: Path, field: str) -> str | None:
    """Returns one `field: value` line of the marker, or None."""
    try:
        text = (root / MARKER_NAME).read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(rf"^{field}: (.+)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else None


def _is_complete(root: Path) -> bool:
    """Tells whether `root` holds a finished demo data set of the current version."""
    if _read_marker_field(root, "version") != str(DEMO_VERSION):
        return False
    expected = _read_marker_field(root, "images")
    found = sum(1 for _ in root.glob("*/*/*.jpeg"))
    return expected is not None and expected.isdigit() and int(expected) == found


def _move_into_place(staging: Path, root: Path) -> None:
    """Renames a finished staging folder to `root`, tolerating a concurrent winner."""
    if root.exists():
        if _is_complete(root):
            return
        # An incomplete or outdated copy is first moved aside: rename is atomic,
        # deleting in place is not.
        trash = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        try:
            os.replace(root, trash / root.name)
        except OSError:
            # Another process moved it first; the rename below settles who wins.
            pass
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(staging, root)
    except OSError:
        # Another process renamed its own copy first; theirs is as good as ours.
        if not _is_complete(root):
            raise


# --------------------------------------------------------------------------- planning


def _plan_patients(
    patients_per_class: int, images_per_patient: tuple[int, int], random_state: int
) -> list[_Patient]:
    """Draws every patient's finding, name number, split, image count and anatomy."""
    rng = np.random.default_rng(random_state)
    # Bacteria and virus patients draw from one pool of person numbers because the
    # real data treats personN as one patient whatever the pathogen; normal patients
    # draw IM numbers from their own pool, whatever their prefix.
    person_numbers = iter(rng.permutation(np.arange(1, 40 * patients_per_class))[: 2 * patients_per_class])
    im_numbers = iter(rng.permutation(np.arange(1, 40 * patients_per_class))[:patients_per_class])
    patients = []
    for finding in FINDINGS:
        splits = _assign_splits(patients_per_class, rng)
        for split in splits:
            number = int(next(im_numbers if finding == "normal" else person_numbers))
            patients.append(
                _Patient(
                    finding=finding,
                    number=number,
                    normal2=finding == "normal" and bool(rng.random() < NORMAL2_FRACTION),
                    split=split,
                    image_count=int(rng.integers(images_per_patient[0], images_per_patient[1] + 1)),
                    anatomy=random_anatomy(finding, rng),
                )
            )
    return patients


def _assign_splits(patient_count: int, rng: np.random.Generator) -> list[str]:
    """Returns a shuffled split name per patient: mostly train, a little val and test."""
    test_count = max(1, round(patient_count * TEST_FRACTION))
    val_count = max(1, round(patient_count * VAL_FRACTION))
    train_count = patient_count - test_count - val_count
    splits = ["train"] * train_count + ["val"] * val_count + ["test"] * test_count
    return [splits[index] for index in rng.permutation(patient_count)]


# --------------------------------------------------------------------------- writing


def _file_name(patient: _Patient, image_index: int, counters: dict[str, int]) -> str:
    """Names an image the way the Kaggle data set does."""
    if patient.finding == "normal":
        prefix = "NORMAL2-IM" if patient.normal2 else "IM"
        return f"{prefix}-{patient.number:04d}-{image_index + 1:04d}.jpeg"
    # M is a running number per pathogen over the whole data set, as in the real data.
    counters[patient.finding] += 1
    return f"person{patient.number}_{patient.finding}_{counters[patient.finding]}.jpeg"


def _write_images(root: Path, patients: list[_Patient], image_size: int, random_state: int) -> int:
    """Renders and saves every patient's images; returns how many were written."""
    for split in SPLITS:
        for class_dir in CLASS_DIRS:
            (root / split / class_dir).mkdir(parents=True, exist_ok=True)
    counters = {"bacteria": 0, "virus": 0}
    written = 0
    for patient_index, patient in enumerate(patients):
        for image_index in range(patient.image_count):
            # A generator per image keeps each image independent of the others' draws.
            rng = np.random.default_rng([random_state, patient_index, image_index])
            pixels = render(patient.anatomy, image_size, rng)
            path = root / patient.split / patient.class_dir / _file_name(patient, image_index, counters)
            Image.fromarray(pixels).save(path, format="JPEG", quality=JPEG_QUALITY)
            written += 1
    return written
