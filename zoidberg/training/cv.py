"""Patient-grouped k-fold cross-validation of one configuration, written to the run store."""

from __future__ import annotations

import numpy as np

from zoidberg.config import RunConfig
from zoidberg.data.dataset import Dataset
from zoidberg.data.duplicates import apply_duplicate_policy, load_or_find_duplicates
from zoidberg.data.folds import check_fold_count, iter_fold_indices, make_folds
from zoidberg.data.summary import describe_dataset
from zoidberg.runs import progress as events
from zoidberg.runs.store import FOLD_METRICS_FILE, OOF_FILE, Run
from zoidberg.runs.worker import Reporter, RunStopped, execute, load_run_dataset, mark_running, quiet
from zoidberg.training import fold_training
from zoidberg.training.run_end import finish_summary, summarize_out_of_fold
from zoidberg.training.run_setup import check_run_config, describe_duplicates, record_data_facts, write_folds_csv


def run_cross_validation(run: Run, *, report: Reporter | None = None) -> dict:
    """Runs (or resumes) the cross-validation described by the run's config.json.

    Finished folds (those with metrics.json) are kept and skipped, which is how a
    resumed run continues. Folds depend only on the data, k and the seed, and each
    fold's seed is `random_state + fold`, so a resumed run ends as an uninterrupted one.

    Args:
        run: A run created by the run store.
        report: Optional callable that receives one-line progress messages.

    Returns:
        The summary dict (also saved as summary.json), or the partial state when stopped.
    """
    say = report or quiet
    return execute(run, lambda: _run_folds(run, say), lambda: _finish_stopped(run, say), say=say, what="Run")


def _run_folds(run: Run, say: Reporter) -> dict:
    config = RunConfig.from_dict(run.config)
    mark_running(run, n_folds=config.n_splits, epochs=config.train.epochs)
    dataset = load_run_dataset(run, config.data, say)
    check_run_config(config, dataset)
    duplicates = load_or_find_duplicates(dataset)
    indices, groups, dropped = apply_duplicate_policy(duplicates, dataset.patients, dataset.training_indices(), config.duplicates)
    labels = dataset.labels[indices]
    check_fold_count(labels, groups[indices], config.n_splits, dataset.class_names)
    fold_of = make_folds(labels, groups[indices], config.n_splits, config.random_state)
    record_data_facts(run, dataset, indices, fold_of, duplicates, config.duplicates, dropped)
    write_folds_csv(run, dataset, indices, fold_of)
    say(
        f"{len(indices)} images from {len(np.unique(dataset.patients[indices]))} patients, "
        f"{config.n_splits} patient-grouped folds; {len(dataset.skipped)} files skipped."
    )
    for line in describe_dataset(dataset) + describe_duplicates(duplicates, config.duplicates, dropped):
        say(line)

    from zoidberg.training.executors import FoldTask, choose_engine, choose_parallel, run_folds_in_children
    from zoidberg.training.fold_check import fold_problem

    tasks = []
    for fold, train_part, validation_part in iter_fold_indices(fold_of):
        if run.fold_path(fold + 1, FOLD_METRICS_FILE).exists():
            problem = fold_problem(run, fold + 1)
            if problem is None:
                say(f"Fold {fold + 1}/{config.n_splits}: already done, kept.")
                continue
            # A damaged finished fold would fail at every later scoring: it is trained again.
            say(f"Fold {fold + 1}/{config.n_splits}: {problem}; it is trained again.")
            run.fold_path(fold + 1, FOLD_METRICS_FILE).unlink()
        tasks.append(FoldTask(fold + 1, train_part, validation_part, indices))
    heads_only = config.model.transfer_mode == "frozen"
    engine = choose_engine(config.engine, len(indices), config.data.image_size, heads_only=heads_only)
    if engine == "inprocess" and heads_only and config.engine == "auto" and tasks:
        say("Frozen backbone: every fold trains only its head on the cached features, here in the worker (a fold child's "
            "TensorFlow start-up would cost more than the head).")
    from zoidberg.runs.worker import is_warm_process

    if engine == "local" and tasks and is_warm_process():
        # A warm worker has TensorFlow loaded already: its first fold trains here, at once,
        # and the others each in a fresh process as usual.
        say(f"Fold {tasks[0].fold_number} trains in the warm worker (TensorFlow already loaded); the others each in a fresh process.")
        _train_folds_here(run, config, dataset, indices, labels, tasks[:1], say)
        tasks = tasks[1:]
    if engine == "inprocess":
        _train_folds_here(run, config, dataset, indices, labels, tasks, say)
    elif engine == "ray" and tasks:
        _train_folds_on_ray(run, config, dataset, indices, labels, tasks, say)
    elif tasks:
        # The backbone pass runs once, here, into the disk cache that every fold child reads.
        if fold_training.load_frozen_backbone(run, config, dataset, indices, say) is not None:
            from zoidberg.training.pipeline import release_memory

            release_memory()
        children = choose_parallel(config.parallel, len(tasks), config.data.image_size)
        say(f"Training {len(tasks)} fold(s) in child processes, {children} at a time.")
        dataset = images_given_back(dataset, config)
        run_folds_in_children(run, tasks, fold_training.train_fold_task, parallel=children)
    return _finish_completed(run, config, dataset, indices, fold_of, say)


def images_given_back(dataset: Dataset, config: RunConfig) -> Dataset:
    """The dataset with its images read through the cache file's mapping and its resident pages given back.

    While fold children train, the worker only waits: the images it decoded (a cold cache)
    or paged in would stay counted in its memory beside each child's. The mapped pages are
    read from the file again when the run ends (gate, test split). Unchanged when the images
    are not cached (--no-cache) or the cache no longer matches.
    """
    import dataclasses

    from zoidberg.data.arraycache import release_pages
    from zoidberg.data.dataset import load_dataset

    if release_pages(dataset.images):
        return dataset
    try:
        mapped = load_dataset(config.data.data_dir, **config.data.loader_options())
    except (OSError, ValueError):
        return dataset
    if mapped.fingerprint != dataset.fingerprint or mapped.images.shape != dataset.images.shape or not release_pages(mapped.images):
        return dataset
    # The caller rebinds its dataset to this one: the decoded array is freed then.
    return dataclasses.replace(dataset, images=mapped.images)


def _train_folds_here(run, config, dataset, indices, labels, tasks, say) -> None:
    """Trains the folds one after another in this process (engine inprocess)."""
    from zoidberg.training.image_rows import ImageRows
    from zoidberg.training.pipeline import release_memory

    images = ImageRows(dataset.images, indices)
    frozen = fold_training.load_frozen_backbone(run, config, dataset, indices, say)
    for task in tasks:
        if run.stop_requested:
            raise RunStopped()
        fold_training.train_fold(run, config, dataset, images, labels, task.train_part, task.validation_part, task.fold_number, say, frozen)
        release_memory()


def _train_folds_on_ray(run, config, dataset, indices, labels, tasks, say) -> None:
    """Trains the folds as Ray tasks (engine ray): the pooled rows and any backbone features go to Ray's object store once."""
    from zoidberg.data.arraycache import aligned_take
    from zoidberg.training.ray_engine import FoldInputs, run_folds_on_ray

    frozen = fold_training.load_frozen_backbone(run, config, dataset, indices, say)
    inputs = FoldInputs(
        images=aligned_take(dataset.images, indices), labels=labels, class_names=tuple(dataset.class_names),
        features=None if frozen is None else frozen.features,
    )
    del frozen
    run_folds_on_ray(
        run, tasks, inputs, fold_training.train_fold_on_ray_node, address=config.ray_address, parallel=config.parallel,
        image_size=config.data.image_size, say=say,
    )


def _load_out_of_fold(run: Run, n_samples: int, num_classes: int) -> np.ndarray:
    """Collects the out-of-fold probabilities of all folds into one (N, C) array."""
    probabilities = np.full((n_samples, num_classes), np.nan, dtype=np.float32)
    for fold in run.folds_with(OOF_FILE):
        with np.load(run.fold_path(fold, OOF_FILE)) as stored:
            probabilities[stored["indices"]] = stored["probabilities"]
    return probabilities


def _finish_completed(run, config, dataset, indices, fold_of, say) -> dict:
    """Fits calibration and the operating point on the out-of-fold predictions, writes summary.json, scores the test split."""
    labels = dataset.labels[indices]
    oof = _load_out_of_fold(run, len(indices), dataset.num_classes)
    seconds = [run.read_fold_json(fold)["train_seconds"] for fold in range(1, config.n_splits + 1)]
    summary = summarize_out_of_fold(
        run, config, labels, oof, fold_of, dataset.class_names, seconds, say,
        parameters=(run.read_fold_json(1) or {}).get("parameters"),
    )
    from zoidberg.inference.gate import fit_run_gate

    fit_run_gate(run, dataset.images, indices, fold_of, say)
    if config.model.transfer_mode == "frozen" and config.model.weights:
        _fit_feature_stage(run, config, dataset, indices, fold_of, say)
    # The test split is scored by the stored models at the stored operating point, as any
    # later evaluation is, so summary.json must exist first.
    summary["test"] = _evaluate_test_split(run, dataset, say)
    return finish_summary(run, summary, say)


def _fit_feature_stage(run, config, dataset, indices, fold_of, say) -> None:
    """Fits the gate's feature stage on the frozen backbone's cached features of the training films."""
    from zoidberg.inference.features import load_or_compute_features
    from zoidberg.inference.gate import fit_run_feature_gate, sampled_images

    features = load_or_compute_features(dataset, config.model, config.data.image_size)
    fit_run_feature_gate(run, features[indices], fold_of, sampled_images(dataset, indices), say,
                         paths=[dataset.root / dataset.paths[index] for index in indices])


def _evaluate_test_split(run: Run, dataset: Dataset, say: Reporter) -> dict | None:
    """Scores the held-out test split once, as the run's evaluation "test", and returns its headline."""
    if not dataset.has_test_split:
        return None
    from zoidberg.inference.evaluate import evaluate_run

    evaluation = evaluate_run(run, dataset.root, split="test", name="test", dataset=dataset, force=True, report=say)
    return {**evaluation["metrics"], "roc": evaluation["roc"], "auc_ci": evaluation["auc_ci"], "evaluation": "test"}


def _finish_stopped(run: Run, say: Reporter) -> dict:
    finished = len(run.fold_metrics())
    run.set_status("stopped", error=None, folds_finished=finished)
    run.append_event(events.RUN_FINISHED, state="stopped", folds_finished=finished)
    say(f"Stopped; {finished} finished fold(s) kept. Resume with: {run.resume_command()}")
    return {"state": "stopped", "folds_finished": finished}

