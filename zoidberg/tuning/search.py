"""keras-tuner search of a TuneConfig: the tuners and the worker's search loop (the hypermodel is in tuning.hypermodel)."""

from __future__ import annotations

import time

import keras_tuner
import numpy as np

from zoidberg.data.summary import describe_dataset
from zoidberg.runs import progress as events
from zoidberg.runs.store import SPLIT_FILE, SUMMARY_FILE, TRIAL_SECONDS_FILE, TRIALS_FILE, Run
from zoidberg.runs.worker import Reporter, execute, load_run_dataset, mark_running, quiet
from zoidberg.tuning.config import ALGORITHM_LABELS, TuneConfig, check_tune_config
from zoidberg.tuning.hypermodel import SearchStopped, ZoidbergHyperModel
from zoidberg.tuning.results import (
    best_row,
    format_objective,
    format_values,
    last_line,
    make_summary,
    trial_number,
    trial_rows,
)
from zoidberg.tuning.space import clean_values
from zoidberg.tuning.split import split_facts, tuning_split

__all__ = ["SearchStopped", "ZoidbergHyperModel", "make_tuner", "run_search"]

# keras-tuner's working directory inside the run folder (runs/<id>/tuner/).
TUNER_PROJECT = "tuner"
# Infeasible combinations (e.g. too many blocks for the image) fail as single trials; this
# many failures in a row end the search, because then the space itself is wrong.
MAX_CONSECUTIVE_FAILED_TRIALS = 5
HYPERBAND_FACTOR = 3


# ---------------------------------------------------------------------------------------
# keras-tuner plumbing.
# ---------------------------------------------------------------------------------------


class _RunStoreTunerMixin:
    """Streams a search into the run store and stops it on request.

    Mixed into each keras-tuner tuner class; `attach` must be called before `search`.
    """

    def attach(self, run: Run, config: TuneConfig, say: Reporter) -> None:
        """Connects the tuner to its run, configuration and reporter."""
        self.zoidberg_run = run
        self.zoidberg_config = config
        self.zoidberg_say = say
        # When each ongoing trial began (the Ray engine runs several at once).
        self.zoidberg_trial_starts: dict[str, float] = {}

    def _populate_initial_space(self):
        # The space has no conditional hyperparameters, so declaring it is enough; the
        # default implementation also builds a throwaway model, which costs seconds.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def on_search_begin(self):
        super().on_search_begin()
        # Saving now means a run interrupted during its first trial reloads the oracle on
        # resume (keras-tuner otherwise saves only after a trial ends).
        self.save()

    def pre_create_trial(self):
        super().pre_create_trial()
        if self.zoidberg_run.stop_requested:
            raise SearchStopped()

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        number = trial_number(trial.trial_id)
        self.hypermodel.trial_number = number
        self.zoidberg_trial_starts[trial.trial_id] = time.perf_counter()
        values = clean_values(trial.hyperparameters.values, self.hypermodel.dimensions)
        epochs = trial.hyperparameters.values.get("tuner/epochs", self.zoidberg_config.epochs_per_trial)
        self.zoidberg_run.append_event(
            events.TRIAL_STARTED,
            trial=number,
            trial_id=trial.trial_id,
            n_trials=self.zoidberg_config.max_trials,
            epochs=epochs,
            hyperparameters=values,
        )
        self.zoidberg_say(f"Trial {number}/{self.zoidberg_config.max_trials}: {format_values(values)}")

    def on_trial_end(self, trial):
        seconds = time.perf_counter() - self.zoidberg_trial_starts.pop(trial.trial_id, time.perf_counter())
        _record_trial_seconds(self.zoidberg_run, trial.trial_id, seconds)
        try:
            super().on_trial_end(trial)
        finally:
            # The table is written even when keras-tuner ends the search here (too many
            # failed trials), so the UI shows what failed.
            rows = trial_rows(self.oracle, self.zoidberg_config, self.zoidberg_run)
            self.zoidberg_run.write_json(TRIALS_FILE, rows)
        row = next(row for row in rows if row["trial_id"] == trial.trial_id)
        best = best_row(rows, self.zoidberg_config.direction)
        self.zoidberg_run.append_event(
            events.TRIAL_FINISHED,
            trial=row["trial"],
            trial_id=trial.trial_id,
            n_trials=self.zoidberg_config.max_trials,
            status=row["status"],
            objective=row["objective"],
            hyperparameters=row["hyperparameters"],
            metrics=row["metrics"],
            seconds=seconds,
            message=row["message"],
            best_trial=best["trial"] if best else None,
            best_objective=best["objective"] if best else None,
        )
        if best:
            self.zoidberg_run.append_event(
                events.BEST_SO_FAR,
                trial=best["trial"],
                objective=best["objective"],
                hyperparameters=best["hyperparameters"],
            )
        outcome = (
            f"{self.zoidberg_config.objective} {format_objective(row['objective'])}"
            if row["status"] == "completed"
            else f"{row['status']}: {row['message']}"
        )
        best_text = f"best so far: trial {best['trial']} ({format_objective(best['objective'])})" if best else "no trial finished yet"
        self.zoidberg_say(f"Trial {row['trial']}/{self.zoidberg_config.max_trials} done in {seconds:.1f} s: {outcome}; {best_text}.")


class _GridSearchOracle(keras_tuner.oracles.GridSearchOracle):
    """GridSearchOracle that also saves where it is in the grid, so a search can resume.

    keras-tuner 1.4's grid oracle keeps its traversal order only in memory; reloaded, it
    would find no next combination and end the search at once.
    """

    def get_state(self):
        state = super().get_state()
        state["zoidberg_grid_order"] = self._linked_ids()
        state["zoidberg_populate_next"] = list(self._populate_next)
        return state

    def set_state(self, state):
        super().set_state(state)
        self._ordered_ids = type(self._ordered_ids)()
        for trial_id in state.get("zoidberg_grid_order", []):
            self._ordered_ids.insert(trial_id)
        self._populate_next = list(state.get("zoidberg_populate_next", []))

    def _linked_ids(self) -> list[str]:
        """Returns the trial ids in the linked list's order."""
        linked = self._ordered_ids
        ids, index = [], linked._next_index[None]
        while index is not None:
            ids.append(linked._memory[index])
            index = linked._next_index[index]
        return ids


class _RandomSearchTuner(_RunStoreTunerMixin, keras_tuner.RandomSearch):
    """Random search that writes to the run store."""


class _BayesianTuner(_RunStoreTunerMixin, keras_tuner.BayesianOptimization):
    """Bayesian optimization that writes to the run store."""


class _HyperbandTuner(_RunStoreTunerMixin, keras_tuner.Hyperband):
    """Hyperband that writes to the run store."""


class _GridSearchTuner(_RunStoreTunerMixin, keras_tuner.Tuner):
    """Grid search (with a resumable oracle) that writes to the run store."""


def make_tuner(config: TuneConfig, hypermodel: ZoidbergHyperModel, directory) -> keras_tuner.Tuner:
    """Creates (or reloads from `directory`) the keras-tuner tuner of a configuration.

    Args:
        config: The tuning configuration.
        hypermodel: The model builder and trainer.
        directory: The run folder; keras-tuner works in directory/tuner/.

    Returns:
        The tuner; with overwrite=False an existing project is reloaded, finished trials
        included, which is how a search resumes.
    """
    objective = keras_tuner.Objective(config.objective, direction=config.direction)
    # keras-tuner treats a seed of 0 as "choose one at random", so it gets seed + 1.
    common = dict(
        hypermodel=hypermodel,
        directory=str(directory),
        project_name=TUNER_PROJECT,
        overwrite=False,
    )
    oracle_options = dict(seed=config.seed + 1, max_consecutive_failed_trials=MAX_CONSECUTIVE_FAILED_TRIALS)
    if config.algorithm == "random":
        return _RandomSearchTuner(objective=objective, max_trials=config.max_trials, **oracle_options, **common)
    if config.algorithm == "bayesian":
        return _BayesianTuner(objective=objective, max_trials=config.max_trials, **oracle_options, **common)
    if config.algorithm == "grid":
        oracle = _GridSearchOracle(objective=objective, max_trials=config.max_trials, **oracle_options)
        return _GridSearchTuner(oracle=oracle, **common)
    tuner = _HyperbandTuner(
        objective=objective,
        max_epochs=config.epochs_per_trial,
        factor=HYPERBAND_FACTOR,
        # Brackets repeat until max_trials trials have run.
        hyperband_iterations=config.max_trials,
        **oracle_options,
        **common,
    )
    # Hyperband has no max_trials option, but its oracle honours the attribute.
    tuner.oracle.max_trials = config.max_trials
    return tuner


def _record_trial_seconds(run: Run, trial_id: str, seconds: float) -> None:
    """Remembers how long a trial took (keras-tuner does not record it)."""
    times = run.read_json(TRIAL_SECONDS_FILE, {}) or {}
    times[trial_id] = seconds
    run.write_json(TRIAL_SECONDS_FILE, times)


# ---------------------------------------------------------------------------------------
# Running.
# ---------------------------------------------------------------------------------------


def run_search(run: Run, *, report: Reporter | None = None) -> dict:
    """Runs (or resumes) the search described by a tuning run's config.json.

    keras-tuner keeps its state in runs/<id>/tuner/ and reloads it, so a resumed run
    keeps its finished trials, runs an unfinished one again and goes on.

    Args:
        run: A run of kind "tune" created by the run store.
        report: Optional callable receiving one-line progress messages.

    Returns:
        The summary (also saved as summary.json), whether completed or stopped.
    """
    say = report or quiet
    return execute(run, lambda: _search(run, say), lambda: _finish(run, say, "stopped"), say=say, what="Tuning")


def _readable_error(error: Exception) -> Exception:
    """Rewrites keras-tuner's "consecutive failures" error as one sentence."""
    text = str(error)
    if isinstance(error, RuntimeError) and "consecutive failures" in text:
        return ValueError(
            f"{MAX_CONSECUTIVE_FAILED_TRIALS} trials in a row failed, so the search was ended; "
            f"the last one said: {last_line(text.split(chr(10), 1)[-1]) or 'no reason'}"
        )
    return error


def _search(run: Run, say: Reporter) -> dict:
    """Loads the data, splits it by patient and runs keras-tuner's search."""
    from zoidberg.training.image_rows import ImageRows

    config = TuneConfig.from_dict(run.config)
    mark_running(
        run, n_trials=config.max_trials, epochs=config.epochs_per_trial, algorithm=config.algorithm, objective=config.objective
    )
    dataset = load_run_dataset(run, config.data, say)
    check_tune_config(config, dataset)
    train_indices, validation_indices = tuning_split(dataset, config.validation_fraction, config.seed)
    facts = split_facts(dataset, train_indices, validation_indices)
    run.write_json(SPLIT_FILE, facts)
    say(
        f"Patient-grouped split of the pooled train+val images: {facts['n_train']} images "
        f"({facts['n_train_patients']} patients) to train, {facts['n_validation']} "
        f"({facts['n_validation_patients']} patients) to validate; {facts['n_test_held_out']} test images held out."
    )
    for line in describe_dataset(dataset):
        say(line)
    if run.stop_requested:
        raise SearchStopped()
    pooled = np.concatenate([train_indices, validation_indices])
    hypermodel = ZoidbergHyperModel(
        config,
        run,
        # Only the pooled train+val images are ever given to the tuner.
        ImageRows(dataset.images, pooled),
        dataset.labels[pooled],
        np.arange(len(train_indices)),
        np.arange(len(train_indices), len(pooled)),
        dataset.num_classes,
    )
    tuner = make_tuner(config, hypermodel, run.path)
    tuner.attach(run, config, say)
    # An interrupted trial is run again, so only finished ones count as kept.
    done = sum(row["status"] != "running" for row in trial_rows(tuner.oracle, config))
    tuned = ", ".join(dimension.name for dimension in config.tuned_dimensions()) or "nothing"
    say(
        f"{ALGORITHM_LABELS[config.algorithm]} over {tuned}: up to {config.max_trials} trials, "
        f"{config.epochs_per_trial} epoch(s) each, objective {config.objective} ({config.direction})"
        + (f"; {done} trial(s) kept from before." if done else ".")
    )
    try:
        if config.engine == "ray":
            from zoidberg.tuning.ray_trials import search_on_ray

            search_on_ray(tuner, run, config, hypermodel, say)
        else:
            tuner.search(epochs=config.epochs_per_trial, verbose=0)
    except RuntimeError as error:
        readable = _readable_error(error)
        if readable is error:
            raise
        raise readable from error
    return _finish(run, say, "completed", tuner.oracle)


def _finish(run: Run, say: Reporter, state: str, oracle=None) -> dict:
    """Writes trials.json and summary.json and records the final state."""
    config = TuneConfig.from_dict(run.config)
    rows = trial_rows(oracle, config, run) if oracle is not None else (run.read_json(TRIALS_FILE, []) or [])
    if state == "stopped":
        # The unfinished trial is shown as such; a resumed search runs it again.
        rows = [row for row in rows if row["status"] != "running"]
    run.write_json(TRIALS_FILE, rows)
    summary = make_summary(run, config, rows, state)
    run.write_json(SUMMARY_FILE, summary)
    completed = summary["n_completed"]
    if state == "completed" and completed == 0:
        message = "No trial finished" + (f": {rows[-1]['message']}" if rows and rows[-1]["message"] else ".")
        run.append_event(events.FAILED, error=message)
        run.set_status("failed", error=message)
        say(f"Tuning failed: {message}")
        return summary
    run.set_status(state, error=None, trials_finished=completed)
    run.append_event(events.RUN_FINISHED, state=state, trials_finished=completed, best_trial=summary["best_trial"], best_objective=summary["best_objective"])
    if state == "stopped":
        say(f"Stopped; {completed} finished trial(s) kept. Resume with: {run.resume_command()}")
    else:
        say(
            f"Tuning done: {completed} trial(s) finished; best {config.objective} "
            f"{format_objective(summary['best_objective'])} (trial {summary['best_trial']})."
        )
    return summary


