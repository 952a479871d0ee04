"""Drawing one synthetic chest film: a patient's random anatomy, then lungs, heart, ribs and the finding's opacities."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Anatomy:
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



def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """Draws a Python float, which keeps the float32 drawing arrays float32 (a NumPy
    float64 scalar would promote them)."""
    return float(rng.uniform(low, high))



def random_anatomy(finding: str, rng: np.random.Generator) -> Anatomy:
    """Draws one patient's anatomy, exposure and disease focus."""
    side = float(rng.choice([-1.0, 1.0]))
    return Anatomy(
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



def render(anatomy: Anatomy, size: int, rng: np.random.Generator) -> np.ndarray:
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



def _lungs(x: np.ndarray, y: np.ndarray, anatomy: Anatomy) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
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



def _mediastinum(x: np.ndarray, y: np.ndarray, anatomy: Anatomy) -> np.ndarray:
    """Returns the bright spine (with vertebrae), heart and clavicles."""
    spine = 1.0 / (1.0 + np.exp((np.abs(x) - 0.085) / 0.02))
    vertebrae = 0.85 + 0.15 * np.cos(2.0 * np.pi * y * 9.0)
    heart = _soft_ellipse(x, y, 0.12, anatomy.lung_center_y + 0.38, anatomy.heart_size, anatomy.heart_size * 0.85)
    clavicle_distance = np.abs(y + 0.62 - 0.18 * np.abs(x) + 0.0 * x)
    clavicles = np.exp(-(clavicle_distance / 0.03) ** 2) * (np.abs(x) < 0.5)
    return 0.26 * spine * vertebrae + 0.08 * heart + 0.12 * clavicles



def _ribs(x: np.ndarray, y: np.ndarray, anatomy: Anatomy) -> np.ndarray:
    """Returns curved posterior rib shadows, 0..1, over the chest only."""
    phase = (y - anatomy.rib_curvature * x**2) * anatomy.rib_frequency
    ribs = np.clip((np.cos(2.0 * np.pi * phase) - 0.45) / 0.55, 0.0, 1.0)
    chest = (y > -0.75) & (y < 0.55) & (np.abs(x) > 0.08)
    return ribs * chest



def _disease(
    x: np.ndarray,
    y: np.ndarray,
    anatomy: Anatomy,
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



def _lobar_consolidation(x, y, anatomy: Anatomy, lung_masks, size: int, rng) -> np.ndarray:
    """One dense, fluffy opacity confined to one lung (bacterial lobar pneumonia)."""
    center_x = anatomy.disease_side * anatomy.lung_offset + anatomy.disease_x
    center_y = anatomy.lung_center_y + anatomy.disease_y * anatomy.lung_height
    distance = ((x - center_x) / anatomy.disease_radius_x) ** 2 + ((y - center_y) / anatomy.disease_radius_y) ** 2
    # A flattened Gaussian: dense in the middle with a soft border, like a lobe filling.
    blob = np.clip(1.6 * np.exp(-0.5 * distance), 0.0, 1.0)
    texture = 0.75 + 0.25 * np.clip(_smooth_noise(rng, size, 10), -1.5, 1.5)
    lung = lung_masks[0] if anatomy.disease_side < 0 else lung_masks[1]
    return anatomy.disease_strength * blob * texture * lung



def _interstitial_haze(x, y, anatomy: Anatomy, lung_masks, size: int, rng) -> np.ndarray:
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
