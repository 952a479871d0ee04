"""Which unlabeled site films to label next, and why: the orderings label-next and the Label page offer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# "stratified": films spread over the parent's scores, each band labeled in proportion to its
# size, at random within it, so the labeled films stay a fair sample of the site (the threshold
# chosen on them is honest) with less chance of missing a band than a plain random draw;
# "random": a plain random draw; "uncertain": nearest the parent's threshold first; "diverse":
# farthest (frozen features) from every film labeled so far (k-center greedy).
ORDERS = ("stratified", "random", "uncertain", "diverse")
ORDER_HELP = {
    "stratified": "spread over the model's scores in proportion, at random within each band: a fair sample of the site (default)",
    "random": "a plain random draw",
    "uncertain": "nearest the run's threshold first (a biased sample: its threshold is chosen on the fair-sample films only)",
    "diverse": "farthest from every labeled film in the frozen features first (k-center)",
}
# Orderings whose labeled films are a fair sample of the site: a threshold may be chosen on them.
FAIR_ORDERS = ("stratified", "random")


@dataclass(frozen=True)
class Pick:
    """One film to label next.

    Attributes:
        index: Its row among the candidates.
        chosen_by: The ordering that chose it (recorded with its label).
        reason: The sentence the reader or script is shown.
    """

    index: int
    chosen_by: str
    reason: str


def order_films(
    positive: np.ndarray,
    labeled: np.ndarray,
    *,
    count: int,
    order: str = "stratified",
    threshold: float = 0.5,
    features: np.ndarray | None = None,
    random_state: int = 0,
) -> list[Pick]:
    """The next `count` films to label among the unlabeled candidates.

    Args:
        positive: Every candidate's P(pneumonia) from the run (labeled ones included: they
            define the bands a stratified order fills).
        labeled: True where a candidate is labeled already.
        count: How many to name.
        order: One of ORDERS.
        threshold: The run's threshold on `positive`'s scale (for "uncertain").
        features: (N, F) frozen features (for "diverse"; without them it orders by score).
        random_state: Seed; the draw also depends on how many films are labeled, so that the
            next call goes on rather than repeats.

    Returns:
        Picks, most wanted first.

    Raises:
        ValueError: An unknown order.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}.")
    positive = np.asarray(positive, dtype=float)
    labeled = np.asarray(labeled, dtype=bool)
    count = max(0, min(int(count), int((~labeled).sum())))
    rng = np.random.default_rng([random_state, int(labeled.sum())])
    if count == 0:
        return []
    if order == "random":
        chosen = rng.permutation(np.flatnonzero(~labeled))[:count]
        return [Pick(int(index), "random", "drawn at random from the films not labeled yet") for index in chosen]
    if order == "uncertain":
        distance = np.abs(_log_odds(positive) - _log_odds(np.array([threshold]))[0])
        candidates = np.flatnonzero(~labeled)
        chosen = candidates[np.argsort(distance[candidates], kind="stable")][:count]
        return [Pick(int(index), "uncertain", f"the model is least sure of it: P(pneumonia) {positive[index]:.2f} against its threshold "
                     f"{threshold:.2f}") for index in chosen]
    if order == "diverse" and features is not None:
        return _diverse(np.asarray(features, dtype=float), positive, labeled, count, rng)
    return _stratified(positive, labeled, count, rng)


def _log_odds(positive: np.ndarray) -> np.ndarray:
    clipped = np.clip(positive, 1e-6, 1 - 1e-6)
    return np.log(clipped / (1 - clipped))


def _stratified(positive: np.ndarray, labeled: np.ndarray, count: int, rng) -> list[Pick]:
    """Bands of equal size over the scores, as many as films labeled after this call; each next film from the band most short of its share."""
    total = int(labeled.sum()) + count
    ranks = np.empty(len(positive), dtype=int)
    ranks[np.argsort(positive, kind="stable")] = np.arange(len(positive))
    band_of = (ranks * total) // len(positive)
    have = np.bincount(band_of[labeled], minlength=total).astype(float)
    size = np.bincount(band_of, minlength=total).astype(float)
    taken = labeled.copy()
    picks = []
    for _ in range(count):
        open_bands = np.flatnonzero(np.bincount(band_of[~taken], minlength=total) > 0)
        # The band whose labels fall furthest short of its share of the films; ties at random.
        short = size[open_bands] * (have.sum() + 1) / len(positive) - have[open_bands]
        best = open_bands[np.flatnonzero(short >= short.max() - 1e-9)]
        band = int(rng.choice(best))
        index = int(rng.choice(np.flatnonzero((band_of == band) & ~taken)))
        # The reason never says what the model scored: the reader is not led.
        picks.append(Pick(index, "stratified", f"a fair sample of the site: drawn at random from one of {total} equal bands of the "
                          f"model's scores ({int(size[band])} films), a band with {int(have[band])} label(s) so far"))
        taken[index] = True
        have[band] += 1
    return picks


def _diverse(features: np.ndarray, positive: np.ndarray, labeled: np.ndarray, count: int, rng) -> list[Pick]:
    """k-center greedy on standardized features: each next film is the one farthest from every film labeled or picked."""
    scale = features.std(axis=0)
    points = (features - features.mean(axis=0)) / np.where(scale > 1e-8, scale, 1.0)
    taken = labeled.copy()
    picks = []
    if not taken.any():
        first = int(rng.choice(len(points)))
        picks.append(Pick(first, "diverse", "a first film, drawn at random"))
        taken[first] = True
        count -= 1
    nearest = np.min([np.linalg.norm(points - points[index], axis=1) for index in np.flatnonzero(taken)], axis=0)
    for _ in range(count):
        index = int(np.argmax(np.where(taken, -np.inf, nearest)))
        picks.append(Pick(index, "diverse", "unlike any film labeled so far (farthest in the frozen features)"))
        taken[index] = True
        nearest = np.minimum(nearest, np.linalg.norm(points - points[index], axis=1))
    return picks
