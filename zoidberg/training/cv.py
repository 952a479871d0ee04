"""Patient-grouped k-fold cross-validation of one configuration, written to the run store."""

from __future__ import annotations

import csv
import dataclasses
import time

import numpy as np

from zoidberg.evaluation import metrics
from zoidberg.config import RunConfig
from zoidberg.data.dataset import Dataset, load_dataset
from zoidberg.data.duplicates import apply_duplicate_policy, load_or_find_duplicates
from zoidberg.data.folds import check_fold_count, fold_table, iter_fold_indices, make_folds
from zoidberg.data.summary import describe_dataset
from zoidberg.runs import progress as events
from zoidberg.runs.store import (
    CALIBRATION_FILE,
    DATA_FILE,
    FOLD_METRICS_FILE,
    FOLDS_FILE,
    HASHES_FILE,
    MODEL_FILE,
    OOF_FILE,
    SUMMARY_FILE,
    Run,
    open_csv,
    write_atomically,
    write_json_atomic,
)
from zoidberg.runs.worker import Reporter, RunStopped, execute, load_run_dataset, mark_running, quiet
from zoidberg.versions import package_versions


def config_payload(config: RunConfig, **extra) -> dict:
    """Returns the JSON saved as config.json: the config plus reproducibility facts."""
    return {**config.to_dict(), **extra}


def prepare_run(config: RunConfig, dataset: Dataset | None = None) -> dict:
    """Checks a configuration against its weights and data, then returns its config.json payload.

    Everything that would make the run fail is refused here, before a run folder or a
    worker exists. The payload records the data's fingerprint (file names, sizes and
    times) and the package versions, so that the run can be reproduced and a resume can
    tell when the data changed.

    Args:
        config: The run configuration.
        dataset: The loaded dataset when the caller already has it; else it is loaded
            here (decoded once, then served from the disk cache to the worker).

    Returns:
        The payload for RunStore.create_run or jobs.start_run.

    Raises:
        ValueError: With what to change (DatasetError is a ValueError).
        FileNotFoundError: Pretrained weights were asked for and no local file has them.
    """
    from zoidberg.models.build import check_model_config

    check_model_config(config.model, config.data.image_size, check_weights=True)
    if config.engine == "ray":
        from zoidberg.training.ray_engine import import_ray

        import_ray()
    if dataset is None:
        dataset = load_dataset(config.data.data_dir, **config.data.loader_options())
    check_run_config(config, dataset)
    return config_payload(config, data_fingerprint=dataset.fingerprint, versions=package_versions())


def check_run_config(config: RunConfig, dataset: Dataset) -> None:
    """Checks a config against the data before anything trains.

    Raises:
        ValueError: with what to change (k too large for the smallest class, size too
            small for the architecture).
    """
    from zoidberg.models.build import check_model_config

    check_model_config(config.model, config.data.image_size)
    indices = dataset.training_indices()
    check_fold_count(dataset.labels[indices], dataset.patients[indices], config.n_splits, dataset.class_names)


def write_folds_csv(run: Run, dataset: Dataset, indices: np.ndarray, fold_of: np.ndarray) -> None:
    """Writes folds.csv (path, patient, label, fold) into the run."""
    rows = fold_table(
        [dataset.paths[i] for i in indices], dataset.patients[indices], dataset.labels[indices], fold_of, dataset.class_names
    )

    def write(path):
        # A file name that is not valid UTF-8 is kept byte for byte, as Run.open_text reads it back.
        with open_csv(path, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=["path", "patient", "label", "fold"])
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(run.path / FOLDS_FILE, write)


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
    _record_data_facts(run, dataset, indices, fold_of, duplicates, config.duplicates, dropped)
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
    engine = choose_engine(config.engine, len(indices), config.data.image_size)
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
        if _frozen_backbone(run, config, dataset, indices, say) is not None:
            from zoidberg.training.pipeline import release_memory

            release_memory()
        children = choose_parallel(config.parallel, len(tasks), config.data.image_size)
        say(f"Training {len(tasks)} fold(s) in child processes, {children} at a time.")
        run_folds_in_children(run, tasks, train_fold_task, parallel=children)
    return _finish_completed(run, config, dataset, indices, fold_of, say)


def _train_folds_here(run, config, dataset, indices, labels, tasks, say) -> None:
    """Trains the folds one after another in this process (engine inprocess)."""
    from zoidberg.training.pipeline import release_memory, rows_as_tensor

    image_tensor = rows_as_tensor(dataset.images, indices)
    frozen = _frozen_backbone(run, config, dataset, indices, say)
    for task in tasks:
        if run.stop_requested:
            raise RunStopped()
        _train_fold(run, config, dataset, image_tensor, labels, task.train_part, task.validation_part, task.fold_number, say, frozen)
        release_memory()


def _train_folds_on_ray(run, config, dataset, indices, labels, tasks, say) -> None:
    """Trains the folds as Ray tasks (engine ray): the pooled rows and any backbone features go to Ray's object store once."""
    from zoidberg.data.arraycache import aligned_take
    from zoidberg.training.ray_engine import FoldInputs, run_folds_on_ray

    frozen = _frozen_backbone(run, config, dataset, indices, say)
    inputs = FoldInputs(
        images=aligned_take(dataset.images, indices), labels=labels, class_names=tuple(dataset.class_names),
        features=None if frozen is None else frozen.features,
    )
    del frozen
    run_folds_on_ray(
        run, tasks, inputs, train_fold_on_ray_node, address=config.ray_address, parallel=config.parallel,
        image_size=config.data.image_size, say=say,
    )


def train_fold_on_ray_node(config_payload: dict, task, inputs, channel, num_cpus: float) -> dict[str, bytes]:
    """The body of one fold task: trains the fold in a scratch run and returns its files (model, oof, metrics, logs).

    Args:
        config_payload: The run's config.json.
        task: The FoldTask (its positions index `inputs`' rows).
        inputs: The pooled rows' images and labels (from Ray's object store).
        channel: The driver's RunChannel actor.
        num_cpus: The CPUs the task declared, for TensorFlow's thread pools.

    Returns:
        {path relative to the run folder: bytes}.
    """
    import shutil

    from zoidberg.runs.store import TENSORBOARD_DIR
    from zoidberg.training.ray_engine import collect_files, make_node_run, set_thread_pools

    run = make_node_run(config_payload, channel, task.fold_number)
    try:
        # A stop request may have come while the task waited for its worker.
        if run.stop_requested:
            raise RunStopped()
        set_thread_pools(num_cpus)
        from zoidberg.training.pipeline import as_image_tensor

        config = RunConfig.from_dict(config_payload)
        frozen = _frozen_head_inputs(config, inputs.features, inputs.num_classes)
        _train_fold(
            run, config, inputs, as_image_tensor(np.ascontiguousarray(inputs.images)), inputs.labels, task.train_part,
            task.validation_part, task.fold_number, lambda message: print(message, flush=True), frozen,
        )
        fold_dir = run.fold_dir(task.fold_number).relative_to(run.path).as_posix()
        return collect_files(run.path, [fold_dir, f"{TENSORBOARD_DIR}/fold_{task.fold_number}"])
    finally:
        run.flush()
        shutil.rmtree(run.path, ignore_errors=True)


def _frozen_head_inputs(config: RunConfig, features, num_classes: int):
    """The FrozenBackbone of a fold task that received the pooled rows' cached features, else None."""
    if features is None or config.model.transfer_mode not in ("frozen", "fine-tune"):
        return None
    from zoidberg.training.frozen_heads import FrozenBackbone

    return FrozenBackbone(config.model, config.data.image_size, num_classes, features)


def train_fold_task(run: Run, task) -> None:
    """Trains one fold in a fold child (engine local): the dataset and any backbone features come from the disk caches."""
    from zoidberg.data.dataset import load_dataset
    from zoidberg.training.pipeline import rows_as_tensor

    # The pool hands a child its next fold before the last one ends; after a stop request
    # that fold must not start.
    if run.stop_requested:
        raise RunStopped()
    config = RunConfig.from_dict(run.config)
    dataset = load_dataset(config.data.data_dir, **config.data.loader_options())

    def say(message: str) -> None:
        print(message, flush=True)

    labels = dataset.labels[task.indices]
    image_tensor = rows_as_tensor(dataset.images, task.indices)
    frozen = _frozen_backbone(run, config, dataset, task.indices, say, announce=False)
    _train_fold(run, config, dataset, image_tensor, labels, task.train_part, task.validation_part, task.fold_number, say, frozen)


def describe_duplicates(report, policy: str, dropped: list[str]) -> list[str]:
    """Console lines about the duplicates of the data and what the run did with them."""
    summary = report.summary()
    if not report.groups:
        return []
    what = {
        "group": "each set shares one fold",
        "drop": f"{len(dropped)} copies dropped",
        "ignore": "left as the file names say (duplicates may sit in different folds)",
    }[policy]
    return [
        f"Duplicates: {summary['exact_groups']} groups of byte-identical files and {summary['near_groups']} of near-duplicates "
        f"({summary['crossing_patients']} across patients); policy {policy}: {what}."
    ]


def _record_data_facts(run: Run, dataset: Dataset, indices: np.ndarray, fold_of: np.ndarray, duplicates, policy: str, dropped: list[str]) -> None:
    """Saves what the run was trained on: fingerprint, counts, skipped files, duplicates, file hashes."""
    run.write_json(
        HASHES_FILE, {dataset.paths[row]: digest for row, digest in zip(indices, (duplicates.digests[row] for row in indices))}
    )
    run.write_json(
        DATA_FILE,
        {
            "root": str(dataset.root),
            "fingerprint": dataset.fingerprint,
            "synthetic": dataset.synthetic,
            "class_names": list(dataset.class_names),
            "n_images": int(len(indices)),
            "n_patients": int(len(np.unique(dataset.patients[indices]))),
            "class_counts": dataset.class_counts(indices),
            "n_test": int(len(dataset.test_indices())),
            "skipped": [{"path": item.path, "reason": item.reason} for item in dataset.skipped],
            "fold_sizes": np.bincount(fold_of).tolist(),
            "duplicates": {**duplicates.summary(), "policy": policy, "dropped": dropped},
        },
    )


def _frozen_backbone(run: Run, config: RunConfig, dataset: Dataset, indices: np.ndarray, say: Reporter, announce: bool = True):
    """Returns a FrozenBackbone with the pooled images' cached features in frozen and fine-tune modes, else None.

    Frozen-backbone folds train only the head on these features, so the backbone runs
    once per image (and not at all when the disk cache already holds them). Fine-tune folds
    warm their head up on them, then train the top backbone layers on the images.
    """
    finished = all(run.read_fold_json(fold) for fold in range(1, config.n_splits + 1))
    if config.model.transfer_mode not in ("frozen", "fine-tune") or finished:
        return None
    from zoidberg.inference.features import INFERENCE_BATCH_SIZE, load_or_compute_features
    from zoidberg.training.frozen_heads import AUGMENTATION_IGNORED, FrozenBackbone

    if announce and config.train.augmentation and config.model.transfer_mode == "frozen":
        run.append_event(events.WARNING, message=AUGMENTATION_IGNORED)
        say(AUGMENTATION_IGNORED)

    def progress(done: int, total: int) -> None:
        # Every 20th batch is often enough for a progress bar and keeps events.jsonl short.
        if done % (20 * INFERENCE_BATCH_SIZE) == 0 or done == total:
            run.append_event(events.FEATURES, done=done, total=total)
            # The backbone pass can take a minute on CPU, so a stop request ends it early.
            if run.stop_requested:
                raise RunStopped()

    start = time.perf_counter()
    features = load_or_compute_features(dataset, config.model, config.data.image_size, progress=progress)
    seconds = time.perf_counter() - start
    if announce:
        run.append_event(events.FEATURES_READY, n_images=len(features), dimension=int(features.shape[1]), seconds=seconds)
        then = "training heads only" if config.model.transfer_mode == "frozen" else "heads warm up on them, then the top layers fine-tune on the images"
        say(f"Backbone features: {features.shape[1]} per image ready in {seconds:.1f} s; {then}.")
    return FrozenBackbone(config.model, config.data.image_size, dataset.num_classes, features[indices])


def _train_fold(
    run, config, dataset, image_tensor, labels, train_part, validation_part, fold_number, say, frozen=None
) -> None:
    """Trains one fold and saves its model, out-of-fold probabilities and metrics.

    With `frozen` (a FrozenBackbone) only the head trains, on the cached features; the
    saved model is still one full flat model (backbone and trained head).
    """
    from zoidberg.models.layers import count_parameters
    from zoidberg.training.callbacks import RunStoreCallback, make_tensorboard
    from zoidberg.training.pipeline import predict_probabilities, train_model

    n_folds = config.n_splits
    run.append_event(events.FOLD_STARTED, fold=fold_number, n_folds=n_folds, n_train=len(train_part), n_validation=len(validation_part))
    say(f"Fold {fold_number}/{n_folds}: training on {len(train_part)} images, validating on {len(validation_part)} ...")
    callback = RunStoreCallback(run, fold_number, n_folds, config.train.epochs)
    logged = [callback, make_tensorboard(run, fold_number)] if config.tensorboard else [callback]
    from zoidberg.data.arraycache import stream_bytes

    if getattr(dataset, "images", None) is not None and dataset.images.nbytes >= stream_bytes():
        from zoidberg.training.callbacks import PageRelease

        # A data set this large is read through its cache file's mapping and must not stay resident.
        logged.append(PageRelease(dataset.images))
    start = time.perf_counter()
    random_state = config.random_state + fold_number
    from zoidberg.training.devices import distribution_scope, precision_policy

    from zoidberg.training.callbacks import ValidationPass
    from zoidberg.inference.decisions import as_class_probabilities

    validation_pass = ValidationPass()
    with precision_policy(config.precision) as mixed, distribution_scope() as strategy:
        if config.precision == "mixed" and not mixed and fold_number == 1:
            say("Mixed precision asked for, but no GPU is visible: training in float32 (float16 is slower on a CPU).")
        if strategy is not None and fold_number == 1:
            say(f"Each fold trains data-parallel over {strategy.num_replicas_in_sync} GPUs (MirroredStrategy).")
        if frozen is not None and config.model.transfer_mode == "fine-tune":
            model, history = _fine_tune_from_features(
                frozen, config, image_tensor, labels, train_part, validation_part, logged, random_state, dataset.num_classes, validation_pass
            )
        elif frozen is None:
            model, history = train_model(
                config.model,
                config.train,
                image_tensor,
                labels,
                train_part,
                validation_part,
                num_classes=dataset.num_classes,
                image_size=config.data.image_size,
                callbacks=logged,
                random_state=random_state,
                validation_pass=validation_pass,
            )
        else:
            head, history = frozen.train_head(
                config.train, labels, train_part, validation_part, callbacks=logged, random_state=random_state
            )
    train_seconds = time.perf_counter() - start
    if callback.stopped_by_request:
        raise RunStopped()
    if config.model.transfer_mode == "frozen" and frozen is not None:
        model = frozen.full_model(head)
        # Test-time augmentation needs the backbone on every variant, so it scores with the full model.
        probabilities = predict_probabilities(model, image_tensor, validation_part, tta=True) if config.tta else frozen.probabilities(head, validation_part)
    elif config.tta or validation_pass.kept_outputs is None:
        probabilities = predict_probabilities(model, image_tensor, validation_part, tta=config.tta)
    else:
        # The last validation pass of the kept weights already predicted the fold: no second pass.
        probabilities = as_class_probabilities(validation_pass.kept_outputs)
    fold_metrics = metrics.evaluate_predictions(labels[validation_part], probabilities, dataset.class_names, 0.5)
    fold_dir = run.fold_dir(fold_number)
    write_atomically(fold_dir / MODEL_FILE, model.save)
    write_atomically(
        fold_dir / OOF_FILE,
        lambda path: np.savez_compressed(path, indices=validation_part, probabilities=probabilities),
    )
    payload = {
        "fold": fold_number,
        "metrics": metrics.to_jsonable(fold_metrics),
        "history": history,
        "epochs_trained": len(history.get("loss", [])),
        "train_seconds": train_seconds,
        "n_train": int(len(train_part)),
        "n_validation": int(len(validation_part)),
        "parameters": count_parameters(model),
    }
    write_json_atomic(fold_dir / FOLD_METRICS_FILE, payload)
    run.append_event(events.FOLD_FINISHED, fold=fold_number, n_folds=n_folds, metrics=payload["metrics"], train_seconds=train_seconds)
    headline = fold_metrics.get("roc_auc")
    say(
        f"Fold {fold_number}/{n_folds}: AUC {headline if headline is None else f'{headline:.3f}'}, "
        f"accuracy {fold_metrics['accuracy']:.3f}"
        # The run's threshold is chosen on all folds' out-of-fold probabilities at the end,
        # so the summary's per-fold accuracy can differ from this provisional one.
        + (" at threshold 0.5 (provisional)" if dataset.num_classes == 2 else "")
        + f", {train_seconds:.1f} s"
    )


def _fine_tune_from_features(frozen, config, image_tensor, labels, train_part, validation_part, callbacks, random_state, num_classes, validation_pass=None):
    """Fine-tunes one fold: the head's warm-up on cached features, then the top layers on the images.

    The warm-up half of the epochs costs a head's training instead of full forward passes;
    fit_model then unfreezes the top fine_tune_layers and goes on at a tenth of the
    learning rate, with augmentation, as a fine-tune fold always does.

    Returns:
        The trained full model and the history of both phases.
    """
    from zoidberg.training.pipeline import fit_on_images

    warmup = max(1, config.train.epochs // 2)
    head, history = frozen.train_head(
        dataclasses.replace(config.train, epochs=warmup), labels, train_part, validation_part, callbacks=callbacks, random_state=random_state
    )
    model = frozen.fresh_model(head)
    if callbacks[0].stopped_by_request:
        return model, history
    more = fit_on_images(
        model, config.model, config.train, image_tensor, labels, train_part, validation_part, num_classes=num_classes,
        random_state=random_state, callbacks=callbacks, initial_epoch=warmup, validation_pass=validation_pass,
    )
    return model, {key: list(history.get(key, [])) + list(more.get(key, [])) for key in set(history) | set(more)}


def _load_out_of_fold(run: Run, n_samples: int, num_classes: int) -> np.ndarray:
    """Collects the out-of-fold probabilities of all folds into one (N, C) array."""
    probabilities = np.full((n_samples, num_classes), np.nan, dtype=np.float32)
    for fold in run.folds_with(OOF_FILE):
        with np.load(run.fold_path(fold, OOF_FILE)) as stored:
            probabilities[stored["indices"]] = stored["probabilities"]
    return probabilities


def fit_run_calibration(run: Run, config: RunConfig, labels: np.ndarray, oof: np.ndarray, say: Reporter):
    """Fits the calibration on the out-of-fold predictions only, and stores it with its effect.

    Returns:
        The Calibration, or None when the out-of-fold predictions hold one class.
    """
    from zoidberg.evaluation.calibration import calibration_summary, fit_calibration

    try:
        calibration = fit_calibration(labels, oof, config.calibration_method)
    except ValueError as error:
        say(f"No calibration: {error}")
        return None
    calibrated = calibration.apply(oof)
    stored = {
        "calibration": calibration.to_dict(),
        "fitted_on": "out-of-fold predictions of the pooled train+val images (never the test split)",
        "n": int(len(labels)),
        "out_of_fold": {"raw": calibration_summary(labels, oof), "calibrated": calibration_summary(labels, calibrated)},
    }
    run.write_json(CALIBRATION_FILE, stored)
    say(
        f"Calibration ({calibration.method}, fitted on out-of-fold predictions): ECE {stored['out_of_fold']['raw']['ece']:.3f} "
        f"-> {stored['out_of_fold']['calibrated']['ece']:.3f}, Brier {stored['out_of_fold']['raw']['brier']:.3f} "
        f"-> {stored['out_of_fold']['calibrated']['brier']:.3f}"
    )
    return calibration


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
    from zoidberg.inference.gate import fit_run_feature_gate, sampled_images
    from zoidberg.inference.features import load_or_compute_features

    features = load_or_compute_features(dataset, config.model, config.data.image_size)
    fit_run_feature_gate(run, features[indices], fold_of, sampled_images(dataset, indices), say,
                         paths=[dataset.root / dataset.paths[index] for index in indices])


def summarize_out_of_fold(run, config, labels, oof, fold_of, class_names, train_seconds, say, **extra) -> dict:
    """Fits the calibration and the operating point on out-of-fold predictions and writes summary.json.

    Cross-validation runs and ensembles of runs end the same way: whatever chose their
    out-of-fold probabilities, the threshold and the calibration see only those.

    Args:
        run: The run (folds.csv and every fold's oof.npz are written).
        config: Its RunConfig or EnsembleConfig (operating_point, calibration_method).
        labels: Class indices of the out-of-fold rows.
        oof: (N, C) out-of-fold probabilities.
        fold_of: The fold (0-based) of each row.
        class_names: Class names in order.
        train_seconds: Each fold's training time.
        say: Console reporter.
        **extra: More summary fields.

    Returns:
        The summary (also summary.json), with "test": None.
    """
    from zoidberg.evaluation.operating import DECISION_CURVE_THRESHOLDS, net_benefit
    from zoidberg.evaluation.out_of_fold import figures_at_threshold, set_operating_point

    n_splits = int(fold_of.max()) + 1
    calibration = fit_run_calibration(run, config, labels, oof, say)
    choice = config.operating_point
    if calibration is None and choice.probabilities == "calibrated":
        choice = dataclasses.replace(choice, probabilities="raw")
    scale = choice.probabilities
    in_use = calibration.apply(oof) if scale == "calibrated" else oof
    binary = len(class_names) == 2
    extras = {}
    threshold = 0.5
    if binary:
        # Chosen on what was just stored (folds.csv, oof.npz, calibration.json), exactly as a
        # later change of operating point from the dashboard or the CLI chooses it.
        point = set_operating_point(run, choice)
        threshold = point["threshold"]
        curve_scores = (calibration.apply(oof) if calibration is not None else oof)[:, 1]
        extras = {
            "operating_points": point["table"],
            "decision_curve": net_benefit(labels, curve_scores, DECISION_CURVE_THRESHOLDS),
        }
        say(
            f"Operating point ({choice.describe()}, {scale} probabilities): threshold {threshold:.3f}, "
            f"sensitivity {point['mean_std']['sensitivity']['mean']:.3f} ± {point['mean_std']['sensitivity']['std'] or 0:.3f}, "
            f"specificity {point['mean_std']['specificity']['mean']:.3f} ± {point['mean_std']['specificity']['std'] or 0:.3f} over folds"
        )
    summary = {
        "run_id": run.id,
        "class_names": list(class_names),
        "threshold": threshold,
        "threshold_method": choice.method if binary else "argmax",
        "operating_point": choice.describe() if binary else "argmax",
        "probabilities": scale,
        **figures_at_threshold(labels, in_use, fold_of, class_names, threshold, train_seconds),
        **metrics.to_jsonable(extras),
        "n_train_per_fold": [int(np.sum(fold_of != fold)) for fold in range(n_splits)],
        "n_validation_per_fold": [int(np.sum(fold_of == fold)) for fold in range(n_splits)],
        **extra,
        "test": None,
    }
    run.write_json(SUMMARY_FILE, summary)
    return summary


def finish_summary(run: Run, summary: dict, say: Reporter, what: str = "Cross-validation") -> dict:
    """Writes the final summary.json, logs the run to MLflow when asked, marks it completed and prints the headline."""
    run.write_json(SUMMARY_FILE, summary)
    if run.config.get("mlflow_uri"):
        summary["mlflow"] = _log_to_mlflow(run, run.config["mlflow_uri"], say)
        run.write_json(SUMMARY_FILE, summary)
    run.set_status("completed", error=None)
    run.append_event(events.RUN_FINISHED, state="completed")
    mean_std = summary["mean_std"]
    say(
        f"{what} done: "
        + ", ".join(
            f"{name} {mean_std[name]['mean']:.3f} ± {mean_std[name]['std']:.3f}"
            for name in ("accuracy", "roc_auc", "sensitivity", "specificity")
            if name in mean_std and mean_std[name]["mean"] is not None
        )
    )
    return summary


def _log_to_mlflow(run: Run, uri: str, say: Reporter) -> dict:
    """Logs the finished run to MLflow; a tracker that fails is reported, never a failed run."""
    from zoidberg.runs.worker import plain_error_message
    from zoidberg.integrations.mlflow_tracking import log_run_to_mlflow

    try:
        logged = log_run_to_mlflow(run, uri)
    except Exception as error:  # A tracker down or misconfigured must not lose the trained run.
        message = plain_error_message(error)
        say(f"MLflow logging failed ({message}); the run is complete: `python -m zoidberg mlflow --run {run.id}` logs it again.")
        return {"uri": uri, "error": message}
    say(f"Logged to MLflow {logged['uri']}: run {logged['run_id']} ({logged['metrics']} metrics).")
    return logged


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
