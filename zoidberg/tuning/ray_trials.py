"""keras-tuner trials as Ray tasks: the oracle stays in the worker, several trials train at once on the cluster."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoidberg.runs.worker import Reporter
from zoidberg.training.ray_engine import (
    POLL_S,
    RunChannel,
    choose_task_resources,
    connect,
    describe_address,
    import_ray,
    make_node_run,
    make_remote,
    relay_events,
    set_thread_pools,
)
from zoidberg.tuning.config import TuneConfig


@dataclass(frozen=True)
class TrialInputs:
    """What every trial task shares: the pooled images and labels, the split's positions and the class count."""

    images: np.ndarray
    labels: np.ndarray
    train_positions: np.ndarray
    validation_positions: np.ndarray
    num_classes: int


def train_trial_on_node(config_payload: dict, hyperparameters, number: int, inputs: TrialInputs, channel, num_cpus: float,
                        weights: bytes | None, keep_weights: bool) -> dict:
    """The body of one trial task: builds and trains the trial's model with the engine's hypermodel.

    Args:
        config_payload: The tuning run's config.json.
        hyperparameters: The trial's keras-tuner HyperParameters.
        number: The trial's number (its seed is seed + number).
        inputs: The shared images and split (from Ray's object store).
        channel: The driver's RunChannel actor.
        num_cpus: The CPUs the task declared.
        weights: A Hyperband trial's starting weights (the trial it continues), or None.
        keep_weights: Whether to send the trained weights back (Hyperband continues trials).

    Returns:
        {"history": {metric: [per epoch]}, "weights": bytes or None}.
    """
    from zoidberg.tuning.hypermodel import SearchStopped, ZoidbergHyperModel

    run = make_node_run(config_payload, channel, number)
    scratch = Path(tempfile.mkdtemp(prefix=f"zoidberg-trial{number}-"))
    try:
        if run.stop_requested:
            raise SearchStopped()
        set_thread_pools(num_cpus)
        from zoidberg.training.image_rows import ImageRows

        config = TuneConfig.from_dict(config_payload)
        hypermodel = ZoidbergHyperModel(
            config, run, ImageRows(np.ascontiguousarray(inputs.images)), inputs.labels, inputs.train_positions,
            inputs.validation_positions, inputs.num_classes,
        )
        hypermodel.trial_number = number
        model = hypermodel.build(hyperparameters)
        if weights:
            (scratch / "start.weights.h5").write_bytes(weights)
            model.load_weights(str(scratch / "start.weights.h5"))
        values = hyperparameters.values
        record = hypermodel.fit(
            hyperparameters, model, epochs=values.get("tuner/epochs", config.epochs_per_trial),
            initial_epoch=values.get("tuner/initial_epoch", 0),
        )
        kept = None
        if keep_weights:
            model.save_weights(str(scratch / "end.weights.h5"))
            kept = (scratch / "end.weights.h5").read_bytes()
        return {"history": record.history, "weights": kept}
    finally:
        run.flush()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(run.path, ignore_errors=True)


def search_on_ray(tuner, run, config: TuneConfig, hypermodel, say: Reporter) -> None:
    """Runs keras-tuner's search with each trial a Ray task, `config.parallel` at once.

    The oracle, the tuner's files and the run store stay in this process (the run's
    worker): it asks the oracle for trials, hands each one's hyperparameters to a task,
    and reports the task's history back to the oracle, as keras-tuner's own loop does
    for one trial at a time. Hyperband's continued trials get the weights of the trial
    they continue, kept where keras-tuner keeps its checkpoints.

    Raises:
        SearchStopped: A stop was requested; unfinished trials run again on resume.
    """
    import keras
    import keras_tuner
    from keras_tuner.src.engine import tuner_utils
    from ray.exceptions import TaskCancelledError

    from zoidberg.tuning.hypermodel import SearchStopped

    ray = import_ray()
    started_here = connect(config.ray_address)
    statuses = keras_tuner.engine.trial.TrialStatus
    try:
        resources = choose_task_resources(config.parallel, config.max_trials, config.data.image_size, ray.cluster_resources())
        slots = resources.at_once
        say(f"Trials run as Ray tasks on {describe_address(config.ray_address)}, {slots} at once, each with {resources.describe()}.")
        channel = ray.remote(RunChannel).options(num_cpus=0).remote()
        inputs_ref = ray.put(
            TrialInputs(
                hypermodel.images.numpy(), hypermodel.labels, hypermodel.train_positions, hypermodel.validation_positions,
                hypermodel.num_classes,
            )
        )
        remote = make_remote(ray, train_trial_on_node, resources)
        hyperband = config.algorithm == "hyperband"
        hosts: set[str] = set()
        attempts: dict[int, int] = {}
        tuner.on_search_begin()
        ongoing: dict = {}
        free = list(range(slots))
        exhausted = stopping = False
        while True:
            while free and not exhausted and not stopping:
                if run.stop_requested:
                    stopping = True
                    break
                slot = free.pop(0)
                trial = tuner.oracle.create_trial(f"ray-{slot}")
                if trial.status == statuses.STOPPED:
                    exhausted = True
                    free.append(slot)
                    break
                if trial.status == statuses.IDLE:
                    # The oracle waits for running trials (Hyperband's next rung): ask again later.
                    free.append(slot)
                    break
                tuner.on_trial_begin(trial)
                continued = trial.hyperparameters.values.get("tuner/trial_id")
                start_weights = _read_checkpoint(tuner, continued) if hyperband and continued else None
                number = hypermodel.trial_number
                ref = remote.remote(run.config, trial.hyperparameters, number, inputs_ref, channel, resources.num_cpus, start_weights, hyperband)
                ongoing[ref] = (trial, slot)
            if not ongoing:
                if exhausted or stopping:
                    break
                time.sleep(POLL_S)
                continue
            ready, _ = ray.wait(list(ongoing), num_returns=1, timeout=POLL_S)
            relay_events(run, channel, hosts, say, attempts=attempts)
            if not stopping and run.stop_requested:
                stopping = True
                channel.request_stop.remote()
            for ref in ready:
                trial, slot = ongoing.pop(ref)
                free.append(slot)
                try:
                    result = ray.get(ref)
                except (SearchStopped, TaskCancelledError):
                    stopping = True
                    continue
                except keras_tuner.errors.FailedTrialError as error:
                    trial.status, trial.message = statuses.FAILED, str(getattr(error, "cause", error) or error)
                except Exception as error:  # Like keras-tuner's loop: an unexpected error invalidates the trial only.
                    cause = getattr(error, "cause", None) or error
                    trial.status, trial.message = statuses.INVALID, f"{cause.__class__.__name__}: {cause}"
                else:
                    record = keras.callbacks.History()
                    record.history = result["history"]
                    tuner.oracle.update_trial(
                        trial.trial_id, tuner_utils.convert_to_metrics_dict(record, tuner.oracle.objective),
                        step=tuner_utils.get_best_step(record, tuner.oracle.objective),
                    )
                    trial.status = statuses.COMPLETED
                    if result.get("weights"):
                        _write_checkpoint(tuner, trial.trial_id, result["weights"])
                tuner.on_trial_end(trial)
        relay_events(run, channel, hosts, say, attempts=attempts)
        if stopping:
            raise SearchStopped()
        tuner.on_search_end()
    finally:
        if started_here:
            ray.shutdown()


def _checkpoint_path(tuner, trial_id: str) -> Path:
    """Where keras-tuner keeps a trial's weights (Hyperband reads them to continue the trial)."""
    return Path(tuner._get_checkpoint_fname(trial_id))


def _read_checkpoint(tuner, trial_id: str) -> bytes | None:
    path = _checkpoint_path(tuner, trial_id)
    return path.read_bytes() if path.exists() else None


def _write_checkpoint(tuner, trial_id: str, weights: bytes) -> None:
    path = _checkpoint_path(tuner, trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(weights)
