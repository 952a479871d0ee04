"""Keras callback that streams training progress into the run store and honours stop requests."""

from __future__ import annotations

import math
import time

import keras

from zoidberg.runs import progress as events
from zoidberg.runs.store import Run


def _clean_logs(logs: dict | None) -> dict[str, float | None]:
    """Turns Keras logs into plain floats (NaN and inf become None for JSON readers)."""
    cleaned = {}
    for key, value in (logs or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        cleaned[key] = number if math.isfinite(number) else None
    return cleaned


class RunStoreCallback(keras.callbacks.Callback):
    """Writes epoch metrics and periodic batch progress as run events.

    Args:
        run: The run to write to.
        fold: 1-based fold number (or trial number for tuning).
        n_folds: Number of folds.
        epochs: Planned epochs of this fold.
        progress_interval_s: Minimum seconds between two batch-progress events.
        scope: Event field naming what `fold` counts ("fold" or "trial").
    """

    def __init__(self, run: Run, fold: int, n_folds: int, epochs: int, progress_interval_s: float = 2.0, scope: str = "fold"):
        super().__init__()
        self.run = run
        self.fold = fold
        self.n_folds = n_folds
        self.epochs = epochs
        self.progress_interval_s = progress_interval_s
        self.scope = scope
        self.stopped_by_request = False
        self._epoch = 0
        self._last_progress = 0.0
        self._epoch_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.run.stop_requested:
            # Keras checks stop_training after every batch, so the run ends within one.
            self.model.stop_training = True
            self.stopped_by_request = True
        now = time.perf_counter()
        if now - self._last_progress >= self.progress_interval_s:
            self._last_progress = now
            self.run.append_event(
                events.PROGRESS,
                **{self.scope: self.fold},
                n_folds=self.n_folds,
                epoch=self._epoch + 1,
                epochs=self.epochs,
                batch=batch + 1,
                steps=self.params.get("steps") if self.params else None,
                logs=_clean_logs(logs),
            )

    def on_epoch_end(self, epoch, logs=None):
        self.run.append_event(
            events.EPOCH,
            **{self.scope: self.fold},
            n_folds=self.n_folds,
            epoch=epoch + 1,
            epochs=self.epochs,
            seconds=time.perf_counter() - self._epoch_start,
            logs=_clean_logs(logs),
        )
        if self.run.stop_requested:
            self.model.stop_training = True
            self.stopped_by_request = True


def make_tensorboard(run: Run, fold: int) -> keras.callbacks.TensorBoard:
    """Keras' own TensorBoard callback, logging one fold's epoch scalars to runs/<id>/tensorboard/fold_<k>.

    `tensorboard --logdir runs/` then shows every fold of every run. Graphs, histograms and
    profiling are off: they cost seconds per epoch on a CPU and megabytes per fold.
    """
    from zoidberg.runs.store import TENSORBOARD_DIR

    return keras.callbacks.TensorBoard(
        log_dir=str(run.path / TENSORBOARD_DIR / f"fold_{fold}"), histogram_freq=0, write_graph=False,
        write_images=False, update_freq="epoch", profile_batch=0,
    )
