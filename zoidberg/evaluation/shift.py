"""How far a folder's films are from a run's training films: a domain classifier's AUC and the EM prevalence."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from zoidberg.evaluation.operating import adjust_to_prevalence

# At most this many training films face the folder's films in the domain classifier.
MAX_TRAINING_FILMS = 1500
DOMAIN_SPLITS = 5
DOMAIN_COMPONENTS = 32
# Domain AUC bands: up to LOW the films cannot be told apart; from HIGH they plainly differ.
LOW_SHIFT, HIGH_SHIFT = 0.65, 0.85
# The EM prevalence differs from the stated one "by much" beyond this (absolute).
PREVALENCE_GAP = 0.10


def domain_auc(training: np.ndarray, folder: np.ndarray, training_groups: np.ndarray, folder_groups: np.ndarray, *, random_state: int = 0) -> float:
    """The patient-grouped cross-validated AUC of a classifier that tells the folder's films from training films.

    0.5 means the films cannot be told apart; near 1.0 means every film gives its origin away.

    Args:
        training: (N, D) representations of training films (thumbnails or backbone features).
        folder: (M, D) representations of the folder's films.
        training_groups: Patient ids of the training films.
        folder_groups: Patient ids of the folder's films (prefixed apart from the training ones).
        random_state: Seed of the sample and the folds.
    """
    rng = np.random.default_rng(random_state)
    if len(training) > MAX_TRAINING_FILMS:
        keep = np.sort(rng.choice(len(training), MAX_TRAINING_FILMS, replace=False))
        training, training_groups = training[keep], training_groups[keep]
    inputs = np.vstack([training, folder]).astype(np.float64)
    origin = np.r_[np.zeros(len(training), dtype=int), np.ones(len(folder), dtype=int)]
    groups = np.r_[[f"training:{group}" for group in training_groups], [f"folder:{group}" for group in folder_groups]]
    n_splits = min(DOMAIN_SPLITS, len(np.unique(groups[origin == 1])), len(np.unique(groups[origin == 0])))
    if n_splits < 2:
        raise ValueError("A shift check needs films of at least two patients in the folder and in the training data.")
    scores = np.zeros(len(origin))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    for train, held in splitter.split(inputs, origin, groups=groups):
        mean, scale = inputs[train].mean(axis=0), inputs[train].std(axis=0) + 1e-6
        components = min(DOMAIN_COMPONENTS, len(train) - 1, inputs.shape[1])
        pca = PCA(n_components=components, random_state=random_state).fit((inputs[train] - mean) / scale)
        model = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
        model.fit(pca.transform((inputs[train] - mean) / scale), origin[train])
        scores[held] = model.predict_proba(pca.transform((inputs[held] - mean) / scale))[:, 1]
    return float(roc_auc_score(origin, scores))


def em_prevalence(positive: np.ndarray, training_prevalence: float, *, iterations: int = 200, tolerance: float = 1e-6) -> float:
    """Saerens et al.'s (2002) EM estimate of a folder's share of pneumonia from calibrated P(pneumonia).

    Args:
        positive: Calibrated P(pneumonia) of the folder's films (calibrated on training data
            of prevalence `training_prevalence`).
        training_prevalence: The share of pneumonia the probabilities were calibrated at.
    """
    positive = np.clip(np.asarray(positive, dtype=float), 1e-6, 1 - 1e-6)
    estimate = float(training_prevalence)
    for _ in range(iterations):
        updated = float(np.mean(adjust_to_prevalence(positive, training_prevalence, min(max(estimate, 1e-4), 1 - 1e-4))))
        if abs(updated - estimate) < tolerance:
            return updated
        estimate = updated
    return estimate


def shift_verdict(auc: float | None, estimated: float | None, stated: float | None) -> dict:
    """The shift check's level and the sentence a clinician reads.

    Args:
        auc: domain_auc(), or None where it could not be measured.
        estimated: em_prevalence(), or None.
        stated: The folder's true or stated share of pneumonia, or None when unknown.

    Returns:
        {"level": "none" | "some" | "strong" | "unknown", "sentence"}.
    """
    prevalence_off = estimated is not None and stated is not None and abs(estimated - stated) > PREVALENCE_GAP
    if auc is None:
        level = "unknown"
    elif auc >= HIGH_SHIFT or (auc >= LOW_SHIFT and prevalence_off):
        level = "strong"
    elif auc >= LOW_SHIFT or prevalence_off:
        level = "some"
    else:
        level = "none"
    parts = []
    if auc is not None:
        parts.append(f"A classifier tells these films from the training films with AUC {auc:.2f}, where 0.5 means it cannot")
    if estimated is not None:
        against = f" against {stated:.0%} in the labels" if stated is not None else ""
        parts.append(f"the model's own probabilities imply {estimated:.0%} pneumonia{against}")
    evidence = "; ".join(parts)
    sentence = {
        "none": "These films resemble the training data",
        "some": "These films differ somewhat from the training data: expect lower specificity than cross-validation says, and check a labeled sample",
        "strong": "These films differ from the training data: expect lower specificity than cross-validation says (more healthy children called pneumonia); adapt the run to this site first",
        "unknown": "How far these films are from the training data could not be measured",
    }[level]
    return {"level": level, "sentence": f"{sentence}." + (f" {evidence}." if evidence else "")}


# --------------------------------------------------------------------------------------
# A run against a folder: which representation, which training films, one verdict.
# --------------------------------------------------------------------------------------

THUMBNAIL_SIDE = 32


def thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, THUMBNAIL_SIDE²) float thumbnails of (N, S, S) uint8 films: a representation any run has."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(image).resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.BILINEAR), dtype=np.float32).ravel() / 255.0
                     for image in images])


def _frozen_member(ensemble):
    """The loaded model whose frozen ImageNet features represent films best: a frozen member (or the run), else None."""
    candidates = list(getattr(ensemble, "members", None) or [getattr(ensemble, "parent", ensemble)])
    candidates = [member for candidate in candidates for member in getattr(candidate, "members", [candidate])]
    return next((member for member in candidates if getattr(member, "frozen", False)), None)


def _training_films(member_run):
    """The training data set a run's models learned from, and its rows (folds.csv), or (None, None) when its folder is gone."""
    import csv
    from pathlib import Path

    from zoidberg.config import DataConfig, from_mapping
    from zoidberg.data.dataset import load_dataset
    from zoidberg.runs.store import DATA_FILE, FOLDS_FILE

    data = member_run.read_json(DATA_FILE) or {}
    root = data.get("root") or (member_run.config.get("data") or {}).get("data_dir")
    if not root or not Path(root).is_dir():
        return None, None
    options = from_mapping(DataConfig, {**(member_run.config.get("data") or {}), "data_dir": root}).loader_options()
    training = load_dataset(root, **options, purpose="evaluation")
    with member_run.open_text(FOLDS_FILE) as handle:
        trained = {row["path"] for row in csv.DictReader(handle)}
    rows = np.array([index for index, path in enumerate(training.paths) if path in trained], dtype=np.int64)
    return training, rows


def measure_shift(ensemble, dataset, rows: np.ndarray, *, calibrated_positive: np.ndarray | None = None,
                  stated_prevalence: float | None = None, random_state: int = 0) -> dict:
    """How far a folder's films are from the films a run trained on, in numbers and in a sentence.

    The films are represented by a frozen member's ImageNet features where the run has one
    (what the models see), else by thumbnails. The training films are a sample of the run's
    own (its folds.csv), read again from its data folder.

    Args:
        ensemble: The loaded run (Ensemble, EnsembleOfRuns or AdaptedEnsemble).
        dataset: The folder, loaded at the run's size.
        rows: Its films to compare.
        calibrated_positive: Calibrated P(pneumonia) of those films, for the EM prevalence.
        stated_prevalence: Their known share of pneumonia (labels), or a stated one.
        random_state: Seed of the training sample and the folds.

    Returns:
        {"domain_auc", "representation", "em_prevalence", "stated_prevalence", "training_prevalence",
        "n_training", "level", "sentence"}.
    """
    member = _frozen_member(ensemble) or next(iter(getattr(ensemble, "members", None) or [getattr(ensemble, "parent", ensemble)]))
    member = getattr(member, "members", [member])[0]
    training, training_rows = _training_films(member.run)
    counts = (member.run.read_json("data.json") or {}).get("class_counts") or {}
    total = sum(counts.values())
    normal = sum(count for name, count in counts.items() if name.lower() == "normal")
    training_prevalence = (total - normal) / total if total else None
    auc, representation = None, None
    if training is not None and len(training_rows) >= 2 and len(rows) >= 2:
        rng = np.random.default_rng(random_state)
        if len(training_rows) > MAX_TRAINING_FILMS:
            training_rows = np.sort(rng.choice(training_rows, MAX_TRAINING_FILMS, replace=False))
        features = member._dataset_features(training, None) if getattr(member, "frozen", False) else None
        own = dataset
        if features is not None and (dataset.image_size != member.image_size):
            from zoidberg.data.labeled_films import load_again

            own = load_again(dataset, label_mode=dataset.label_mode, image_size=member.image_size, resize=training.resize, enhance=training.enhance)
        folder_features = member._dataset_features(own, None) if features is not None else None
        if features is not None and folder_features is not None and len(own) == len(dataset):
            training_side, folder_side, representation = features[training_rows], folder_features[rows], "frozen ImageNet features"
        else:
            training_side, folder_side, representation = thumbnails(training.images[training_rows]), thumbnails(dataset.images[rows]), "thumbnails"
        try:
            auc = domain_auc(training_side, folder_side, training.patients[training_rows].astype(str), dataset.patients[rows].astype(str),
                             random_state=random_state)
        except ValueError:
            auc = None
    estimated = None
    if calibrated_positive is not None and training_prevalence is not None and len(calibrated_positive):
        estimated = em_prevalence(calibrated_positive, training_prevalence)
    verdict = shift_verdict(auc, estimated, stated_prevalence)
    return {"domain_auc": auc, "representation": representation, "em_prevalence": estimated, "stated_prevalence": stated_prevalence,
            "training_prevalence": training_prevalence, "n_training": 0 if training_rows is None else int(len(training_rows)), **verdict}
