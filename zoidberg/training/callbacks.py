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


class ValidationPass(keras.callbacks.Callback):
    """Validates after every epoch in one inference pass, and keeps that pass's probabilities.

    Keras' own validation (fit's validation_data) computes the loss and the metrics but
    throws the predictions away, so the out-of-fold probabilities used to cost a second
    pass over the fold after training. This callback replaces it: it predicts the
    validation batches once per epoch, writes the same `val_*` logs Keras would (loss,
    regularization included, and every compiled metric), and keeps each epoch's
    probabilities. At the end of training the kept ones are those of the epoch whose
    weights the model ends with: the best epoch when early stopping restores it, else the
    last. It must come before the callbacks that read `val_*` logs (early stopping, the
    run-store callback): fit_model puts it first.

    Args:
        validation_data: Batches of (images, labels), as make_batches returns them
            (fit_model sets them when the pass is handed to it without).
        early_stopping: The run's EarlyStopping callback (restore_best_weights), or None.
    """

    def __init__(self, validation_data=None, early_stopping: keras.callbacks.EarlyStopping | None = None):
        super().__init__()
        self.validation_data = validation_data
        self.early_stopping = early_stopping
        self.outputs_by_epoch: dict[int, object] = {}
        self.kept_epoch: int | None = None
        self._labels = None
        self._infer = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        model = self.model

        # A fresh tf.function per fit (fine-tuning recompiles the model between two fits); a
        # traced call costs milliseconds where model.predict costs tens of them per batch.
        @tf.function(reduce_retracing=True)
        def infer(batch):
            return model(batch, training=False)

        self._infer = infer

    def on_epoch_end(self, epoch, logs=None):
        import numpy as np

        outputs, labels = [], []
        if self.validation_data is None:
            return
        for batch, batch_labels in self.validation_data:
            outputs.append(self._infer(batch).numpy())
            labels.append(batch_labels.numpy())
        if not outputs:
            return
        y_pred = np.concatenate(outputs)
        y_true = np.concatenate(labels)
        self.outputs_by_epoch[epoch] = y_pred
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in self.evaluate_outputs(y_true, y_pred).items()})

    def evaluate_outputs(self, y_true, y_pred) -> dict[str, float]:
        """The model's compiled loss and metrics on one epoch's validation outputs, as Keras' evaluate reports them."""
        model = self.model
        model.reset_metrics()
        loss = model.compute_loss(x=None, y=y_true, y_pred=y_pred, training=False)
        results = {name: float(value) for name, value in model.compute_metrics(None, y_true, y_pred).items()}
        # compute_metrics reports the loss tracker too, which only evaluate's test steps feed.
        results["loss"] = float(loss)
        model.reset_metrics()
        return results

    def on_train_end(self, logs=None):
        if not self.outputs_by_epoch:
            return
        stopping = self.early_stopping
        restored = stopping is not None and stopping.restore_best_weights and stopping.best_weights is not None
        self.kept_epoch = stopping.best_epoch if restored and stopping.best_epoch in self.outputs_by_epoch else max(self.outputs_by_epoch)

    @property
    def kept_outputs(self):
        """The raw model outputs over the validation batches at the kept epoch, or None before any epoch ended."""
        return None if self.kept_epoch is None else self.outputs_by_epoch[self.kept_epoch]


class PageRelease(keras.callbacks.Callback):
    """Gives a memory-mapped data set's pages back every few batches and after each epoch (see arraycache.release_pages).

    Training reads batches through the cache file's mapping; without this every image read
    in an epoch would stay resident, so a data set larger than memory could not train.

    Args:
        array: The memory-mapped images the batches are gathered from.
        every_batches: Batches between two releases.
    """

    def __init__(self, array, every_batches: int = 50):
        super().__init__()
        self.array = array
        self.every_batches = every_batches

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every_batches == 0:
            self._release()

    def on_epoch_end(self, epoch, logs=None):
        self._release()

    def _release(self) -> None:
        from zoidberg.data.arraycache import release_pages

        release_pages(self.array)
