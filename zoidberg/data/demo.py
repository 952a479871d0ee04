"""Deterministic synthetic chest X-ray demo data set in the Kaggle layout and naming scheme."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

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
class _Anatomy:
    """One synthetic patient's body shape, exposure and, if any, disease."""

    finding: str
    lung_offset: float
    lung_width: float
    lung_height: float
    lung_center_y: float
    heart_size: float
    body_width: float
    rib_frequency: float
    rib_curvature: float
    brightness: float
    gamma: float
    disease_side: float
    disease_x: float
    disease_y: float
    disease_radius_x: float
    disease_radius_y: float
    disease_strength: float
    streak_seed: int


@dataclasses.dataclass(frozen=True)
class _Patient:
    """One synthetic patient: file-name stem pieces, split and image count."""

    finding: str
    number: int
    normal2: bool
    split: str
    image_count: int
    anatomy: _Anatomy

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
    return _render(_random_anatomy(finding, rng), image_size, rng)


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
                    anatomy=_random_anatomy(finding, rng),
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


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """Draws a Python float, which keeps the float32 drawing arrays float32 (a NumPy
    float64 scalar would promote them)."""
    return float(rng.uniform(low, high))


def _random_anatomy(finding: str, rng: np.random.Generator) -> _Anatomy:
    """Draws one patient's anatomy, exposure and disease focus."""
    side = float(rng.choice([-1.0, 1.0]))
    return _Anatomy(
        finding=finding,
        lung_offset=_uniform(rng, 0.30, 0.38),
        lung_width=_uniform(rng, 0.22, 0.28),
        lung_height=_uniform(rng, 0.48, 0.60),
        lung_center_y=_uniform(rng, -0.10, 0.02),
        heart_size=_uniform(rng, 0.18, 0.26),
        body_width=_uniform(rng, 0.78, 0.92),
        rib_frequency=_uniform(rng, 4.5, 6.0),
        rib_curvature=_uniform(rng, 0.25, 0.45),
        brightness=_uniform(rng, 0.90, 1.10),
        gamma=_uniform(rng, 0.90, 1.12),
        disease_side=side,
        disease_x=_uniform(rng, -0.06, 0.06),
        disease_y=_uniform(rng, -0.10, 0.30),
        disease_radius_x=_uniform(rng, 0.12, 0.17),
        disease_radius_y=_uniform(rng, 0.15, 0.24),
        disease_strength=_uniform(rng, 0.32, 0.42) if finding == "bacteria" else _uniform(rng, 0.17, 0.23),
        streak_seed=int(rng.integers(2**31)),
    )


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
            pixels = _render(patient.anatomy, image_size, rng)
            path = root / patient.split / patient.class_dir / _file_name(patient, image_index, counters)
            Image.fromarray(pixels).save(path, format="JPEG", quality=JPEG_QUALITY)
            written += 1
    return written


# --------------------------------------------------------------------------- drawing


def _soft_ellipse(x: np.ndarray, y: np.ndarray, center_x, center_y, radius_x, radius_y, softness=0.06):
    """Returns a 0..1 ellipse mask with a smooth edge about `softness` wide."""
    radius = np.sqrt(((x - center_x) / radius_x) ** 2 + ((y - center_y) / radius_y) ** 2)
    # Far outside, the exponent would overflow float32; the mask is zero there anyway.
    return 1.0 / (1.0 + np.exp(np.minimum((radius - 1.0) / softness, 60.0)))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Returns low-frequency noise (about `cells` blobs across), zero mean, unit-ish scale."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))


def _jittered_grid(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns x, y in [-1, 1] after a small random shift, rotation and zoom (positioning)."""
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    x, y = np.meshgrid(axis, axis)
    angle = float(rng.normal(0.0, 0.035))
    zoom = 1.0 + float(rng.normal(0.0, 0.03))
    shift_x, shift_y = (float(value) for value in rng.normal(0.0, 0.03, size=2))
    cosine, sine = math.cos(angle), math.sin(angle)
    return (cosine * x - sine * y) * zoom + shift_x, (sine * x + cosine * y) * zoom + shift_y


def _render(anatomy: _Anatomy, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draws one radiograph of a patient as uint8 (size, size)."""
    x, y = _jittered_grid(size, rng)
    body = _soft_ellipse(x, y, 0.0, 0.15, anatomy.body_width, 1.05, softness=0.05)
    lungs, lung_masks = _lungs(x, y, anatomy)
    image = 0.05 + 0.36 * body
    image += _mediastinum(x, y, anatomy) * body
    image += 0.07 * _ribs(x, y, anatomy) * body
    image -= 0.24 * lungs
    image += _disease(x, y, anatomy, lung_masks, size, rng)
    image += 0.04 * _smooth_noise(rng, size, 6) * body
    image += rng.normal(0.0, 0.025, size=(size, size)).astype(np.float32)
    exposure = anatomy.brightness * float(rng.uniform(0.97, 1.03))
    image = np.clip(image, 0.0, 1.0) ** anatomy.gamma * exposure
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _lungs(x: np.ndarray, y: np.ndarray, anatomy: _Anatomy) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Returns the combined lung-field mask (heart cut out) and each lung's own mask."""
    # The apex is narrower than the base: widen the ellipse towards the diaphragm.
    taper = 0.80 + 0.20 * np.clip((y - anatomy.lung_center_y) / anatomy.lung_height + 0.5, 0.0, 1.5)
    masks = tuple(
        _soft_ellipse(
            x, y, side * anatomy.lung_offset, anatomy.lung_center_y,
            anatomy.lung_width * taper, anatomy.lung_height,
        )
        for side in (-1.0, 1.0)
    )
    heart = _soft_ellipse(x, y, 0.12, anatomy.lung_center_y + 0.38, anatomy.heart_size, anatomy.heart_size * 0.85)
    return np.maximum(*masks) * (1.0 - 0.8 * heart), masks


def _mediastinum(x: np.ndarray, y: np.ndarray, anatomy: _Anatomy) -> np.ndarray:
    """Returns the bright spine (with vertebrae), heart and clavicles."""
    spine = 1.0 / (1.0 + np.exp((np.abs(x) - 0.085) / 0.02))
    vertebrae = 0.85 + 0.15 * np.cos(2.0 * np.pi * y * 9.0)
    heart = _soft_ellipse(x, y, 0.12, anatomy.lung_center_y + 0.38, anatomy.heart_size, anatomy.heart_size * 0.85)
    clavicle_distance = np.abs(y + 0.62 - 0.18 * np.abs(x) + 0.0 * x)
    clavicles = np.exp(-(clavicle_distance / 0.03) ** 2) * (np.abs(x) < 0.5)
    return 0.26 * spine * vertebrae + 0.08 * heart + 0.12 * clavicles


def _ribs(x: np.ndarray, y: np.ndarray, anatomy: _Anatomy) -> np.ndarray:
    """Returns curved posterior rib shadows, 0..1, over the chest only."""
    phase = (y - anatomy.rib_curvature * x**2) * anatomy.rib_frequency
    ribs = np.clip((np.cos(2.0 * np.pi * phase) - 0.45) / 0.55, 0.0, 1.0)
    chest = (y > -0.75) & (y < 0.55) & (np.abs(x) > 0.08)
    return ribs * chest


def _disease(
    x: np.ndarray,
    y: np.ndarray,
    anatomy: _Anatomy,
    lung_masks: tuple[np.ndarray, np.ndarray],
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Returns the added opacity of the patient's pneumonia (zero when normal)."""
    if anatomy.finding == "bacteria":
        return _lobar_consolidation(x, y, anatomy, lung_masks, size, rng)
    if anatomy.finding == "virus":
        return _interstitial_haze(x, y, anatomy, lung_masks, size, rng)
    return np.zeros_like(x)


def _lobar_consolidation(x, y, anatomy: _Anatomy, lung_masks, size: int, rng) -> np.ndarray:
    """One dense, fluffy opacity confined to one lung (bacterial lobar pneumonia)."""
    center_x = anatomy.disease_side * anatomy.lung_offset + anatomy.disease_x
    center_y = anatomy.lung_center_y + anatomy.disease_y * anatomy.lung_height
    distance = ((x - center_x) / anatomy.disease_radius_x) ** 2 + ((y - center_y) / anatomy.disease_radius_y) ** 2
    # A flattened Gaussian: dense in the middle with a soft border, like a lobe filling.
    blob = np.clip(1.6 * np.exp(-0.5 * distance), 0.0, 1.0)
    texture = 0.75 + 0.25 * np.clip(_smooth_noise(rng, size, 10), -1.5, 1.5)
    lung = lung_masks[0] if anatomy.disease_side < 0 else lung_masks[1]
    return anatomy.disease_strength * blob * texture * lung


def _interstitial_haze(x, y, anatomy: _Anatomy, lung_masks, size: int, rng) -> np.ndarray:
    """Diffuse bilateral perihilar haze with streaks (viral interstitial pneumonia)."""
    lungs = np.maximum(*lung_masks)
    hilum_y = anatomy.lung_center_y + 0.05
    perihilar = np.exp(-(((np.abs(x) - 0.18) / 0.35) ** 2) - ((y - hilum_y) / 0.6) ** 2)
    streaks = _radiating_streaks(x, y, hilum_y, np.random.default_rng(anatomy.streak_seed), rng)
    mottling = 0.8 + 0.2 * np.clip(_smooth_noise(rng, size, 14), -1.5, 1.5)
    haze = (0.55 + 0.45 * perihilar) * (0.6 + 0.8 * streaks) * mottling
    return anatomy.disease_strength * haze * lungs


def _radiating_streaks(x, y, hilum_y: float, patient_rng, image_rng) -> np.ndarray:
    """Thin lines fanning out from both hila, 0..1; the pattern is fixed per patient."""
    count = 14
    sides = np.repeat(np.array([-1.0, 1.0], dtype=np.float32), count // 2)
    angles = (patient_rng.uniform(-1.1, 1.1, size=count) + image_rng.normal(0.0, 0.03, size=count)).astype(np.float32)
    hilum_x = sides * 0.14
    direction_x = sides * np.cos(angles)
    direction_y = np.sin(angles)
    offset_x = x[None] - hilum_x[:, None, None]
    offset_y = y[None] - hilum_y
    along = offset_x * direction_x[:, None, None] + offset_y * direction_y[:, None, None]
    across = offset_x * direction_y[:, None, None] - offset_y * direction_x[:, None, None]
    lines = np.exp(-((across / 0.03) ** 2) - along / 0.6) * np.clip(along / 0.1, 0.0, 1.0)
    return np.clip(lines.sum(axis=0), 0.0, 1.0)
