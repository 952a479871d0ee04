"""The gate's second stage: how far a film is from the training films in what the network sees (frozen ImageNet features)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from zoidberg.data.ood import MIN_FIT_IMAGES, THRESHOLD_PERCENTILE, GateVerdict, PcaDensity

FEATURE_GATE_FORMAT_VERSION = 1
# In threshold units (the out-of-fold median maps to 0, the THRESHOLD_PERCENTILE to 1): from 1
# a film lies outside what the training children's films look like to the backbone; from
# FAR_UNITS it is unlike any of them. Both are set by the training films alone, never by
# the images the gate should refuse.
FAR_UNITS = 2.0
# Mirror symmetry below this percentile of the training films' names a refused film a side view.
SYMMETRY_PERCENTILE = 1.0
SYMMETRY_SIDE = 64
NOT_A_FILM = ("This is unlike every film the model learned from (a side view, another body part or modality, an adult's "
              "film, or a film drawn on or cut out of a figure): no diagnosis")
SIDE_VIEW = ("This looks like a side (lateral) view or another projection: it lacks the left-right symmetry of the frontal "
             "chest films the model learned from, so no diagnosis")
OTHER_POPULATION = ("This looks like a chest film, but outside the films of children aged 1 to 5 the model learned from "
                    "(an adult, or another population or acquisition): no diagnosis")


def mirror_symmetry(images) -> np.ndarray:
    """How alike each uint8 film and its left-right mirror image are (correlation of 64-px thumbnails; a frontal chest is near 0.8)."""
    from PIL import Image

    values = []
    for image in images:
        thumbnail = np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((SYMMETRY_SIDE, SYMMETRY_SIDE), Image.Resampling.BILINEAR), dtype=np.float64)
        thumbnail = (thumbnail - thumbnail.mean()) / (thumbnail.std() + 1e-6)
        values.append(float(np.mean(thumbnail * thumbnail[:, ::-1])))
    return np.array(values)


def feature_rows(features: np.ndarray) -> np.ndarray:
    """The backbone's pooled features on the scale the density is fitted on: log(1 + x) of the ReLU6 means, in float64."""
    return np.log1p(np.maximum(np.asarray(features, dtype=np.float64), 0.0))


@dataclass(frozen=True)
class FeatureGate:
    """PPCA densities of the training films' frozen ImageNet features, one per fold, and the out-of-fold scale.

    Attributes:
        densities: One PPCA per fold, fitted on the features of the other folds.
        threshold: The out-of-fold distance at the percentile.
        median: The out-of-fold median distance.
        n_fitted: Training films it saw.
        percentile: The percentile of the threshold.
        symmetry_floor: The training films' mirror symmetry at SYMMETRY_PERCENTILE: a refused
            film below it is named a side view.
        stored_quality: The JPEG quality the training films were stored at (0: not JPEGs). A
            film is stored so too (prepare_films) before its features are read: a full-resolution
            original, smooth where the training copies carry compression, is otherwise far from
            them by its storage alone.
    """

    densities: tuple[PcaDensity, ...]
    threshold: float
    median: float
    n_fitted: int
    percentile: float = THRESHOLD_PERCENTILE
    symmetry_floor: float = 0.0
    stored_quality: int = 0

    def prepare_films(self, films) -> list[np.ndarray]:
        """The films (uint8, at the model's size) stored as the training films were, before their features are read."""
        if not self.stored_quality:
            return [np.asarray(film) for film in films]
        from zoidberg.data.jpeg_quality import jpeg_round_trip

        return [jpeg_round_trip(film, self.stored_quality) for film in films]

    def units(self, features: np.ndarray) -> np.ndarray:
        """Each film's distance in threshold units (each fold's density scores it, as it scored its held-out films)."""
        rows = feature_rows(features)
        distance = np.mean([density.distance(rows) for density in self.densities], axis=0)
        return (distance - self.median) / max(self.threshold - self.median, 1e-9)

    def verdicts(self, features: np.ndarray, images=None) -> list[GateVerdict | None]:
        """None for a film it lets through, else its refusal, named by what it most likely is.

        Args:
            features: (N, D) pooled features of the films.
            images: The films as the model sees them (uint8), to name a side view by its
                missing left-right symmetry; None leaves the view unnamed.
        """
        units = self.units(features)
        symmetry = mirror_symmetry(images) if images is not None else np.full(len(units), np.inf)
        results = []
        for value, mirrored in zip(units, symmetry):
            value = float(value)
            if value <= 1.0:
                results.append(None)
                continue
            what = SIDE_VIEW if mirrored < self.symmetry_floor else NOT_A_FILM if value >= FAR_UNITS else OTHER_POPULATION
            results.append(GateVerdict(False, value, f"{what} (feature score {value:.2f}, refused above 1)."))
        return results

    def to_bytes(self) -> bytes:
        """The gate as an .npz file's bytes."""
        most = max(len(density.variances) for density in self.densities)

        def padded(values, fill=0.0):
            return np.pad(values, [(0, most - len(values))] + [(0, 0)] * (values.ndim - 1), constant_values=fill)

        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            version=np.int64(FEATURE_GATE_FORMAT_VERSION),
            mean=np.stack([density.mean for density in self.densities]),
            components=np.stack([padded(density.components) for density in self.densities]),
            variances=np.stack([padded(density.variances, 1.0) for density in self.densities]),
            kept=np.array([len(density.variances) for density in self.densities]),
            noise_variance=np.array([density.noise_variance for density in self.densities]),
            scale=np.array([self.threshold, self.median, self.percentile, self.symmetry_floor]),
            n_fitted=np.int64(self.n_fitted),
            stored_quality=np.int64(self.stored_quality),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureGate:
        """Reads a gate written by to_bytes.

        Raises:
            ValueError: The bytes are damaged or of another version.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as stored:
                if int(stored["version"]) != FEATURE_GATE_FORMAT_VERSION:
                    raise ValueError("it was written by another version of Zoidberg")
                threshold, median, percentile, symmetry_floor = (float(value) for value in stored["scale"])
                densities = tuple(
                    PcaDensity(mean, components[:kept], variances[:kept], float(noise))
                    for mean, components, variances, kept, noise in zip(
                        stored["mean"], stored["components"], stored["variances"], stored["kept"], stored["noise_variance"]
                    )
                )
                # Gates written before stored_quality existed read films as they come.
                quality = int(stored["stored_quality"]) if "stored_quality" in stored.files else 0
                return cls(densities, threshold, median, int(stored["n_fitted"]), percentile, symmetry_floor, quality)
        except ValueError:
            raise
        except Exception as error:  # A damaged zip or a missing array: np.load raises many types.
            raise ValueError(f"it is damaged ({type(error).__name__}: {error})") from None

    def describe(self) -> str:
        """One line for the console."""
        return (f"feature stage fitted on {self.n_fitted} training films' ImageNet features; refuses above the "
                f"{self.percentile:g}th percentile of their out-of-fold distances")


def fit_feature_gate(features: np.ndarray, fold_of: np.ndarray, images=None, *, percentile: float = THRESHOLD_PERCENTILE, seed: int = 0,
                     stored_quality: int = 0) -> FeatureGate | None:
    """Fits the feature stage on the training films' frozen features, with its scale from their out-of-fold distances.

    Args:
        features: (N, D) pooled ImageNet features of the training films.
        fold_of: Each film's fold (0-based); patients never straddle two.
        images: The training films (uint8, as the model saw them), for the symmetry floor.
        percentile: The percentile of the out-of-fold distances that maps to 1.
        seed: Seeds the PCA.
        stored_quality: The JPEG quality the training films were stored at (0: not JPEGs).

    Returns:
        The gate read back from its bytes (it computes with what is stored), or None with
        fewer than MIN_FIT_IMAGES films or one fold.
    """
    fold_of = np.asarray(fold_of)
    if len(fold_of) < MIN_FIT_IMAGES or len(np.unique(fold_of)) < 2:
        return None
    rows = feature_rows(features)
    distance = np.empty(len(rows))
    densities = []
    for fold in np.unique(fold_of):
        held = fold_of == fold
        densities.append(PcaDensity.fit(rows[~held], seed=seed))
        distance[held] = densities[-1].distance(rows[held])
    floor = float(np.percentile(mirror_symmetry(images), SYMMETRY_PERCENTILE)) if images is not None and len(images) else 0.0
    gate = FeatureGate(tuple(densities), float(np.percentile(distance, percentile)), float(np.median(distance)), int(len(rows)),
                       float(percentile), floor, int(stored_quality))
    return FeatureGate.from_bytes(gate.to_bytes())
