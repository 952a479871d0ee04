"""The out-of-distribution gate: how far an image is from a run's training films, and whether to refuse it."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

# The gate looks at a small thumbnail: enough for the layout of a frontal chest film (lungs,
# mediastinum, diaphragm, shoulders), too coarse for the findings the model reads.
THUMBNAIL_SIDE = 32
# Principal components of the thumbnails kept by the probabilistic PCA; the rest is the residual.
MAX_COMPONENTS = 64
# The thresholds sit at this percentile of the out-of-fold training films' scores.
THRESHOLD_PERCENTILE = 99.5
# At most this many training films fit the gate (a seeded sample of larger sets).
MAX_FIT_IMAGES = 20_000
# Fewer training films than this leave no gate: the percentile would mean nothing.
MIN_FIT_IMAGES = 20
# Below this many training films the gate is strict: its thresholds come from few scores.
FEW_FILMS = 500
# A thumbnail whose gray levels vary less than this (of 255) is blank: nothing to diagnose.
MIN_CONTRAST = 4.0
# ood_score of a blank image, which has no meaningful distance.
BLANK_SCORE = 100.0
GATE_FORMAT_VERSION = 1

REFUSAL = "This does not look like a frontal chest X-ray like those the model learned from"


@dataclass(frozen=True)
class GateVerdict:
    """The gate's answer for one image.

    Attributes:
        in_distribution: False when the image is refused.
        ood_score: How far it is from the training films, in units of the threshold:
            1.0 is the threshold, above it the image is refused.
        reason: Why it was refused, or None.
    """

    in_distribution: bool
    ood_score: float
    reason: str | None = None

    def to_dict(self) -> dict:
        """The fields every prediction row carries."""
        return {"in_distribution": self.in_distribution, "ood_score": round(self.ood_score, 4), "ood_reason": self.reason}


def thumbnails(images: np.ndarray | list, indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Standardized thumbnails of uint8 images, and each image's contrast.

    Each image is shrunk to THUMBNAIL_SIDE² (stretched, as the data set's 224-px copy was
    made), then standardized to mean 0 and variance 1, so that exposure and windowing do not
    count as distance; the layout does.

    Args:
        images: 2-D uint8 images of any sizes, or an (N, S, S) array (memory-mapped is fine).
        indices: Only these rows of `images`, read one at a time (no copy of the whole).

    Returns:
        (N, THUMBNAIL_SIDE²) float32 thumbnails and (N,) gray-level standard deviations.
    """
    indices = range(len(images)) if indices is None else np.asarray(indices)
    rows = np.empty((len(indices), THUMBNAIL_SIDE * THUMBNAIL_SIDE), dtype=np.float32)
    contrast = np.empty(len(indices), dtype=np.float32)
    for index, row in enumerate(indices):
        image = images[row]
        small = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize(
            (THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR
        )
        values = np.asarray(small, dtype=np.float32).ravel()
        contrast[index] = values.std()
        rows[index] = (values - values.mean()) / max(float(contrast[index]), 1e-3)
    return rows, contrast


def _orientation_variants(rows: np.ndarray) -> list[np.ndarray]:
    """The same thumbnails inverted, upside down and turned a quarter either way."""
    squares = rows.reshape(-1, THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    flat = lambda stack: np.ascontiguousarray(stack).reshape(len(rows), -1)  # noqa: E731
    return [-rows, flat(np.rot90(squares, 2, axes=(1, 2))), flat(np.rot90(squares, 1, axes=(1, 2))), flat(np.rot90(squares, 3, axes=(1, 2)))]


@dataclass(frozen=True)
class PcaDensity:
    """A probabilistic PCA of training thumbnails (Tipping & Bishop): a Mahalanobis distance in closed form."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    noise_variance: float

    @classmethod
    def fit(cls, rows: np.ndarray, seed: int = 0) -> PcaDensity:
        """Fits on (N, D) thumbnails with sklearn's PCA (at most MAX_COMPONENTS, fewer than N)."""
        from sklearn.decomposition import PCA

        components = int(min(MAX_COMPONENTS, len(rows) - 1, rows.shape[1] - 1))
        pca = PCA(n_components=components, svd_solver="randomized" if len(rows) > 2000 else "full", random_state=seed).fit(rows)
        floor = 1e-6 * float(np.mean(np.var(rows, axis=0))) + 1e-9
        return cls(
            mean=np.ascontiguousarray(pca.mean_, dtype=np.float64),
            components=np.ascontiguousarray(pca.components_, dtype=np.float64),
            variances=np.maximum(pca.explained_variance_, floor).astype(np.float64),
            noise_variance=max(float(pca.noise_variance_), floor),
        )

    def distance(self, rows: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance under the PPCA covariance, per thumbnail.

        In float64: the residual is a difference of two large sums, which in float32 keeps only
        a few digits and so changes with how the BLAS of a CPU orders its sums (an Intel and an
        AMD machine scored the same films 3e-5 apart); in float64 that order costs ~1e-12.
        """
        centred = np.asarray(rows, dtype=np.float64) - np.asarray(self.mean, dtype=np.float64)
        projected = centred @ np.asarray(self.components, dtype=np.float64).T
        residual = np.maximum(np.sum(centred * centred, axis=1) - np.sum(projected * projected, axis=1), 0.0)
        return np.sum(projected * projected / self.variances, axis=1) + residual / self.noise_variance


@dataclass(frozen=True)
class OodGate:
    """The gate of one run: densities of its training films' thumbnails and two thresholds.

    Two checks, both set at THRESHOLD_PERCENTILE of the out-of-fold training films:
    - distance: the PPCA Mahalanobis distance of the thumbnail (photographs, documents,
      CT and MR slices, other body parts);
    - orientation: how much closer the image would be to the training films inverted,
      upside down or turned, than as it is (inverted and rotated films, which keep the
      statistics of an X-ray).
    A blank image (contrast below MIN_CONTRAST) is refused outright.

    A new image is scored by each fold's density and the scores are averaged: each density
    scores it as it scored its held-out films, so the thresholds mean the same for both.

    Attributes:
        densities: One PPCA per fold, fitted on the films of the other folds.
        distance_threshold / distance_median: The out-of-fold distance at the percentile and at the median.
        orientation_threshold / orientation_median: The same for the orientation margin.
        n_fitted: Training films the gate saw.
        percentile: The percentile of the thresholds.
    """

    densities: tuple[PcaDensity, ...]
    distance_threshold: float
    distance_median: float
    orientation_threshold: float
    orientation_median: float
    n_fitted: int
    percentile: float = THRESHOLD_PERCENTILE

    def verdicts(self, images) -> list[GateVerdict]:
        """The gate's verdict on each uint8 image (as the model sees it, or any size)."""
        if not len(images):
            return []
        rows, contrast = thumbnails(images)
        scores = [_raw_scores(density, rows) for density in self.densities]
        distance = np.mean([score[0] for score in scores], axis=0)
        orientation = np.mean([score[1] for score in scores], axis=0)
        distance_units = _in_threshold_units(distance, self.distance_median, self.distance_threshold)
        orientation_units = _in_threshold_units(orientation, self.orientation_median, self.orientation_threshold)
        results = []
        for index in range(len(rows)):
            if contrast[index] < MIN_CONTRAST:
                results.append(GateVerdict(False, BLANK_SCORE, f"{REFUSAL}: the image is blank (almost no contrast)."))
                continue
            score = float(max(distance_units[index], orientation_units[index]))
            if distance_units[index] > 1.0:
                reason = f"{REFUSAL}: it is far from the training films (score {score:.2f}, refused above 1)."
            elif orientation_units[index] > 1.0:
                reason = f"{REFUSAL}: it looks inverted, upside down or turned (score {score:.2f}, refused above 1)."
            else:
                reason = None
            results.append(GateVerdict(reason is None, score, reason))
        return results

    def describe(self) -> str:
        """One line for the CLI and the run view."""
        text = (
            f"out-of-distribution gate fitted on {self.n_fitted} training films; thresholds at the "
            f"{self.percentile:g}th percentile of their out-of-fold scores"
        )
        if self.n_fitted < FEW_FILMS:
            text += " (few films: expect it to refuse some real X-rays too)"
        return text

    def to_bytes(self) -> bytes:
        """The gate as an .npz file's bytes."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            version=np.int64(GATE_FORMAT_VERSION),
            mean=np.stack([density.mean for density in self.densities]),
            # Densities of folds of different sizes may keep different numbers of components.
            components=np.stack([_padded(density.components, self._most_components()) for density in self.densities]),
            variances=np.stack([_padded(density.variances, self._most_components(), fill=1.0) for density in self.densities]),
            kept=np.array([len(density.variances) for density in self.densities]),
            noise_variance=np.array([density.noise_variance for density in self.densities]),
            thresholds=np.array([self.distance_threshold, self.distance_median, self.orientation_threshold, self.orientation_median]),
            n_fitted=np.int64(self.n_fitted),
            percentile=np.float64(self.percentile),
            thumbnail_side=np.int64(THUMBNAIL_SIDE),
        )
        return buffer.getvalue()

    def _most_components(self) -> int:
        return max(len(density.variances) for density in self.densities)

    @classmethod
    def from_bytes(cls, data: bytes) -> OodGate:
        """Reads a gate written by to_bytes.

        Raises:
            ValueError: The bytes are not a gate of this version.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as stored:
                if int(stored["version"]) != GATE_FORMAT_VERSION or int(stored["thumbnail_side"]) != THUMBNAIL_SIDE:
                    raise ValueError("it was written by another version of Zoidberg")
                thresholds = [float(value) for value in stored["thresholds"]]
                densities = tuple(
                    PcaDensity(mean, components[:kept], variances[:kept], float(noise))
                    for mean, components, variances, kept, noise in zip(
                        stored["mean"], stored["components"], stored["variances"], stored["kept"], stored["noise_variance"]
                    )
                )
                return cls(densities, thresholds[0], thresholds[1], thresholds[2], thresholds[3], int(stored["n_fitted"]), float(stored["percentile"]))
        except ValueError:
            raise
        except Exception as error:  # A damaged zip or a missing array: np.load raises many types.
            raise ValueError(f"it is damaged ({type(error).__name__}: {error})") from None


def _padded(values: np.ndarray, rows: int, fill: float = 0.0) -> np.ndarray:
    """Pads the first axis of an array to `rows` with `fill`."""
    pad = [(0, rows - len(values))] + [(0, 0)] * (values.ndim - 1)
    return np.pad(values, pad, constant_values=fill)


def _raw_scores(density: PcaDensity, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, orientation margin) of thumbnails under a density."""
    distance = density.distance(rows)
    turned = np.min([density.distance(variant) for variant in _orientation_variants(rows)], axis=0)
    return distance, distance - turned


def _in_threshold_units(values: np.ndarray, median: float, threshold: float) -> np.ndarray:
    """Maps the out-of-fold median to 0 and the threshold to 1."""
    return (values - median) / max(threshold - median, 1e-9)


def fit_gate(
    images, fold_of: np.ndarray, *, indices: np.ndarray | None = None, percentile: float = THRESHOLD_PERCENTILE, seed: int = 0
) -> OodGate | None:
    """Fits the gate on a run's training films, with thresholds from their out-of-fold scores.

    Each fold's films are scored by a density fitted on the other folds, as the run's models
    were validated, so the thresholds see films the density did not: at the percentile,
    about (100 − percentile) % of new films like the training ones are refused.

    Args:
        images: The films, (N, S, S) uint8, as the models saw them.
        fold_of: The fold (0-based) of each training film; patients never straddle two.
        indices: The training films' rows of `images` (default: all), in fold_of's order.
        percentile: The percentile of the out-of-fold scores that sets each threshold.
        seed: Seeds the sample of sets larger than MAX_FIT_IMAGES.

    Returns:
        The gate (n_fitted counts the films it saw), or None when there are fewer than
        MIN_FIT_IMAGES films or one fold only.
    """
    fold_of = np.asarray(fold_of)
    if len(fold_of) < MIN_FIT_IMAGES or len(np.unique(fold_of)) < 2:
        return None
    indices = np.arange(len(fold_of)) if indices is None else np.asarray(indices)
    if len(fold_of) > MAX_FIT_IMAGES:
        # A seeded sample bounds time and memory (thumbnails of 100,000 films would take 400 MB).
        sample = np.sort(np.random.default_rng(seed).choice(len(fold_of), MAX_FIT_IMAGES, replace=False))
        indices, fold_of = indices[sample], fold_of[sample]
    rows, _ = thumbnails(images, indices)
    distance = np.empty(len(rows))
    orientation = np.empty(len(rows))
    densities = []
    for fold in np.unique(fold_of):
        held_out = fold_of == fold
        densities.append(PcaDensity.fit(rows[~held_out], seed=seed))
        distance[held_out], orientation[held_out] = _raw_scores(densities[-1], rows[held_out])
    gate = OodGate(
        densities=tuple(densities),
        distance_threshold=float(np.percentile(distance, percentile)),
        distance_median=float(np.median(distance)),
        orientation_threshold=float(np.percentile(orientation, percentile)),
        orientation_median=float(np.median(orientation)),
        n_fitted=int(len(rows)),
        percentile=float(percentile),
    )
    # The gate in use is the one read back from what is stored: it computes with exactly the
    # arrays a later process reads from ood_gate.npz.
    return OodGate.from_bytes(gate.to_bytes())
