"""The keras-tuner hypermodel of a search: builds and trains one trial with the engine's own builder and pipeline."""

from __future__ import annotations

from typing import Any

import keras_tuner

from zoidberg.config import ModelConfig, TrainConfig
from zoidberg.runs.store import Run
from zoidberg.runs.worker import RunStopped
from zoidberg.training.callbacks import RunStoreCallback
from zoidberg.tuning.config import TuneConfig, configs_for_values
from zoidberg.tuning.space import NONE_CHOICE, Dimension, clean_values


class SearchStopped(RunStopped, keras_tuner.errors.FatalError):
    """The engine's stop request, raised inside a search: keras-tuner lets a FatalError through."""


# ---------------------------------------------------------------------------------------
# keras-tuner plumbing.
# ---------------------------------------------------------------------------------------


def _tuner_value(value: Any) -> Any:
    """Encodes a value for keras-tuner (None is not a valid Choice value)."""
    return NONE_CHOICE if value is None else value


def _declare(hp: keras_tuner.HyperParameters, dimension: Dimension) -> Any:
    """Declares one tuned dimension on `hp` and returns its current value."""
    name = dimension.name
    if dimension.kind == "bool" and set(dimension.choices) == {False, True}:
        return hp.Boolean(name, default=bool(dimension.value))
    if not dimension.is_range:
        return hp.Choice(
            name, [_tuner_value(choice) for choice in dimension.choices], default=_tuner_value(dimension.value)
        )
    sampling = "log" if dimension.log else "linear"
    if dimension.kind == "int":
        return hp.Int(name, int(dimension.min_value), int(dimension.max_value), step=dimension.step, sampling=sampling, default=int(dimension.value))
    return hp.Float(name, float(dimension.min_value), float(dimension.max_value), step=dimension.step, sampling=sampling, default=float(dimension.value))


class ZoidbergHyperModel(keras_tuner.HyperModel):
    """Builds and trains one trial's model with the engine's own builder and pipeline.

    Args:
        config: The tuning configuration.
        run: The run that receives per-epoch events.
        images: ImageRows of the pooled train+val images.
        labels: Their int labels.
        train_positions: Rows of `images` to train on.
        validation_positions: Rows for the objective.
        num_classes: Number of classes.
    """

    def __init__(self, config: TuneConfig, run: Run, images, labels, train_positions, validation_positions, num_classes: int):
        super().__init__(name=f"zoidberg_{config.architecture}", tunable=True)
        self.config = config
        self.run = run
        self.images = images
        self.labels = labels
        self.train_positions = train_positions
        self.validation_positions = validation_positions
        self.num_classes = num_classes
        self.dimensions = config.dimensions()
        self.trial_number = 0

    def declare_hyperparameters(self, hp):
        """Registers every tuned dimension (keras-tuner calls this before the first trial)."""
        for dimension in self.dimensions:
            if dimension.tuned:
                _declare(hp, dimension)

    def trial_values(self, hp) -> dict[str, Any]:
        """Returns the tuned values of a trial, decoded."""
        return clean_values(
            {dimension.name: _declare(hp, dimension) for dimension in self.dimensions if dimension.tuned},
            self.dimensions,
        )

    def build(self, hp):
        """Builds and compiles the trial's model; an unbuildable combination fails the trial only."""
        import keras

        from zoidberg.models.build import build_model, compile_model

        model_config, train_config = self._configs(hp, self.config.epochs_per_trial)
        keras.utils.set_random_seed(self.config.seed + self.trial_number)
        try:
            model = build_model(model_config, self.config.data.image_size, self.num_classes)
        except (ValueError, FileNotFoundError) as error:
            raise keras_tuner.errors.FailedTrialError(str(error)) from None
        return compile_model(model, train_config, self.num_classes)

    def _configs(self, hp, epochs: int) -> tuple[ModelConfig, TrainConfig]:
        try:
            return configs_for_values(self.config, self.trial_values(hp), epochs)
        except ValueError as error:
            raise keras_tuner.errors.FailedTrialError(str(error)) from None

    def fit(self, hp, model, *args, callbacks=(), epochs=None, initial_epoch=0, verbose=0, **kwargs):
        """Trains on the train part and validates on the patient-disjoint validation part.

        Hyperband passes `epochs` and `initial_epoch`; the other tuners pass epochs per trial.

        Raises:
            SearchStopped: A stop was requested during the trial; the trial is left
                unfinished so that a resumed search runs it again.
        """
        import keras

        from zoidberg.training.pipeline import fit_on_images

        epochs = int(epochs or self.config.epochs_per_trial)
        model_config, train_config = self._configs(hp, epochs)
        seed = self.config.seed + self.trial_number
        progress = RunStoreCallback(self.run, self.trial_number, self.config.max_trials, epochs, scope="trial")
        # The same training as cross-validation, fine-tune's two phases included; the tuner
        # brings its own stopping, so no early stopping is added.
        history = fit_on_images(
            model, model_config, train_config, self.images, self.labels, self.train_positions, self.validation_positions,
            num_classes=self.num_classes, random_state=seed, callbacks=[*callbacks, progress],
            initial_epoch=int(initial_epoch or 0), verbose=verbose, early_stopping=False,
        )
        if progress.stopped_by_request:
            raise SearchStopped()
        # keras-tuner scores a trial by the best epoch of a History (a plain dict would be
        # read as final values).
        record = keras.callbacks.History()
        record.history = history
        return record
