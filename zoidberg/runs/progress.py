"""The events a worker writes to events.jsonl, and the one fold of that stream into a run's progress."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# Event types, named once: the worker writes them, every reader folds them here.
RUN_STARTED = "run_started"  # n_folds and epochs, or n_trials, epochs, algorithm, objective.
RESUMED = "resumed"  # previous_state: a new worker takes the run over.
LOADING = "loading"  # done, total: images decoded so far.
FEATURES = "features"  # done, total: frozen-backbone feature pass.
FEATURES_READY = "features_ready"  # n_images, dimension, seconds.
FOLD_STARTED = "fold_started"  # fold, n_folds, n_train, n_validation.
FOLD_FINISHED = "fold_finished"  # fold, n_folds, metrics, train_seconds.
TRIAL_STARTED = "trial_started"  # trial, trial_id, n_trials, epochs, hyperparameters.
TRIAL_FINISHED = "trial_finished"  # trial, status, objective, hyperparameters, metrics, seconds, best_*.
BEST_SO_FAR = "best_so_far"  # trial, objective, hyperparameters.
PROGRESS = "progress"  # fold or trial, epoch, epochs, batch, steps, logs: a batch-level heartbeat.
EPOCH = "epoch"  # fold or trial, epoch, epochs, seconds, logs: one finished epoch.
MEMBER_STARTED = "member_started"  # index, n_members, run_id, name: an ensemble trains a member run.
MEMBER_FINISHED = "member_finished"  # index, n_members, run_id, state.
WARNING = "warning"  # message.
RUN_FINISHED = "run_finished"  # state (completed or stopped) and what was kept.
FAILED = "failed"  # error.

_STARTED = {FOLD_STARTED: "fold", TRIAL_STARTED: "trial"}
_FINISHED = {FOLD_FINISHED: "fold", TRIAL_FINISHED: "trial"}


@dataclass
class Progress:
    """What a run's events say about where it is, for folds and trials alike.

    Attributes:
        phase: "starting", "loading", "training", "evaluating" (every unit finished,
            the summary is being written) or "done".
        unit: What the run trains one after another: "fold" or "trial".
        total: Planned folds, or the most trials.
        epochs: Planned epochs of the current fold or trial.
        current: The fold or trial being trained (1-based), or 0 before the first.
        epoch: The epoch being trained in it (1-based), or 0.
        batch: Batches done in that epoch, or 0.
        steps: Batches per epoch, when known.
        finished: Numbers of the folds or trials that ended.
        epochs_done: Finished epochs of the current fold or trial.
        epoch_seconds: Durations of the epochs finished since the last (re)start.
        loading: (done, total) of image decoding, when loading.
        features: (done, total) of the frozen-backbone feature pass, when there is one.
        started_at: Unix time of the last (re)start, if known.
        epoch_rows: One record per finished epoch of the latest attempt of each fold or
            trial: {unit: number, "epoch": n, **logs}.
        hyperparameters: The values of the trial being trained (searches only).
    """

    phase: str = "starting"
    unit: str = "fold"
    total: int = 0
    epochs: int = 0
    current: int = 0
    epoch: int = 0
    batch: int = 0
    steps: int | None = None
    finished: set = field(default_factory=set)
    epochs_done: int = 0
    epoch_seconds: list = field(default_factory=list)
    loading: tuple[int, int] | None = None
    features: tuple[int, int] | None = None
    started_at: float | None = None
    epoch_rows: list = field(default_factory=list)
    hyperparameters: dict = field(default_factory=dict)

    @property
    def in_current(self) -> bool:
        """Whether a fold or trial is being trained now (started and not finished)."""
        return self.current > 0 and self.current not in self.finished


class ProgressFolder:
    """Folds a run's events into its Progress as they arrive, so a follower reads each event once."""

    def __init__(self):
        self.progress = Progress()
        self._epochs_by_unit: dict[int, list[dict]] = {}

    def add(self, events: Sequence[dict]) -> Progress:
        """Applies new events (in order) and returns the progress so far."""
        for event in events:
            _apply_event(self.progress, self._epochs_by_unit, event)
        self.progress.epoch_rows = [row for number in sorted(self._epochs_by_unit) for row in self._epochs_by_unit[number]]
        return self.progress


def read_progress(events: Sequence[dict]) -> Progress:
    """Folds a run's events into a Progress.

    Args:
        events: All events of the run, in order.

    Returns:
        The progress.
    """
    return ProgressFolder().add(events)


def _apply_event(progress: Progress, epochs_by_unit: dict[int, list[dict]], event: dict) -> None:
    """Updates the progress with one event."""
    kind = event.get("type")
    if kind == RUN_STARTED:
        progress.phase = "loading"
        progress.unit = "trial" if "n_trials" in event else "fold"
        progress.total = int(event.get("n_trials") or event.get("n_folds") or progress.total)
        progress.epochs = int(event.get("epochs") or progress.epochs)
        progress.started_at = event.get("time")
        progress.epoch_seconds = []
    elif kind == RESUMED:
        progress.phase = "starting"
    elif kind == LOADING:
        progress.loading = (int(event.get("done", 0)), int(event.get("total", 0)))
    elif kind == FEATURES:
        progress.features = (int(event.get("done", 0)), int(event.get("total", 0)))
    elif kind in _STARTED:
        unit = _STARTED[kind]
        progress.phase, progress.unit = "training", unit
        progress.current = int(event[unit])
        progress.total = int(event.get(f"n_{unit}s") or progress.total)
        progress.epochs = int(event.get("epochs") or progress.epochs)
        progress.hyperparameters = dict(event.get("hyperparameters") or {})
        progress.epoch, progress.batch, progress.epochs_done = 0, 0, 0
        # A restarted fold or trial trains again from scratch: its curves start over.
        epochs_by_unit[progress.current] = []
    elif kind == PROGRESS:
        progress.epoch = int(event.get("epoch") or 0)
        progress.batch = int(event.get("batch") or 0)
        progress.steps = event.get("steps") or progress.steps
    elif kind == EPOCH:
        number = int(event.get(progress.unit) or progress.current)
        progress.epoch = progress.epochs_done = int(event.get("epoch") or 0)
        progress.batch = 0
        progress.epoch_seconds.append(float(event.get("seconds") or 0.0))
        row = {progress.unit: number, "epoch": progress.epoch, **(event.get("logs") or {})}
        epochs_by_unit.setdefault(number, []).append(row)
    elif kind in _FINISHED:
        progress.finished.add(int(event.get(_FINISHED[kind]) or 0))
        if progress.total and len(progress.finished) >= progress.total:
            progress.phase = "evaluating"
    elif kind in (RUN_FINISHED, FAILED):
        progress.phase = "done"


def eta_seconds(progress: Progress) -> float | None:
    """Estimates the time left of a cross-validation from the mean duration of the finished epochs.

    Early stopping can end folds sooner, so this is an upper bound.

    Args:
        progress: The run's progress.

    Returns:
        Seconds left, or None before the first epoch has finished.
    """
    if not progress.epoch_seconds or not progress.total or not progress.epochs:
        return None
    mean_epoch = sum(progress.epoch_seconds) / len(progress.epoch_seconds)
    units_left = progress.total - len(progress.finished)
    epochs_left = units_left * progress.epochs - (progress.epochs_done if progress.in_current else 0)
    if progress.in_current and progress.steps and progress.batch and progress.epoch > progress.epochs_done:
        epochs_left -= progress.batch / progress.steps
    return max(0.0, epochs_left * mean_epoch)


def overall_fraction(progress: Progress) -> float:
    """Returns the share of all planned epochs that is done, in [0, 1].

    Args:
        progress: The run's progress.
    """
    if not progress.total or not progress.epochs:
        return 0.0
    done = len(progress.finished) * progress.epochs
    if progress.in_current:
        done += progress.epochs_done
        if progress.steps and progress.epoch > progress.epochs_done:
            done += progress.batch / progress.steps
    return min(1.0, done / (progress.total * progress.epochs))


def format_duration(seconds: float | None) -> str:
    """Formats seconds as "1 h 02 min", "3 min 05 s" or "12 s".

    Args:
        seconds: A duration, or None.

    Returns:
        The text ("—" for None).
    """
    if seconds is None:
        return "—"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
