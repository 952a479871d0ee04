"""One fold's training: its inputs (images, or a frozen backbone's cached features), its model, out-of-fold probabilities and metrics."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from zoidberg.config import RunConfig
from zoidberg.data.dataset import Dataset
from zoidberg.evaluation import metrics
from zoidberg.runs import progress as events
from zoidberg.runs.store import FOLD_METRICS_FILE, MODEL_FILE, OOF_FILE, Run, write_atomically, write_json_atomic
from zoidberg.runs.worker import Reporter, RunStopped


def train_fold_task(run: Run, task) -> None:
    """Trains one fold in a fold child (engine local): the dataset and any backbone features come from the disk caches."""
    from zoidberg.data.dataset import load_dataset
    from zoidberg.training.image_rows import ImageRows

    # The pool hands a child its next fold before the last one ends; after a stop request
    # that fold must not start.
    if run.stop_requested:
        raise RunStopped()
    config = RunConfig.from_dict(run.config)
    dataset = load_dataset(config.data.data_dir, **config.data.loader_options())

    def say(message: str) -> None:
        print(message, flush=True)

    labels = dataset.labels[task.indices]
    images = ImageRows(dataset.images, task.indices)
    frozen = load_frozen_backbone(run, config, dataset, task.indices, say, announce=False)
    train_fold(run, config, dataset, images, labels, task.train_part, task.validation_part, task.fold_number, say, frozen)


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
        from zoidberg.training.image_rows import ImageRows

        config = RunConfig.from_dict(config_payload)
        frozen = frozen_head_inputs(config, inputs.features, inputs.num_classes)
        train_fold(
            run, config, inputs, ImageRows(np.ascontiguousarray(inputs.images)), inputs.labels, task.train_part,
            task.validation_part, task.fold_number, lambda message: print(message, flush=True), frozen,
        )
        fold_dir = run.fold_dir(task.fold_number).relative_to(run.path).as_posix()
        return collect_files(run.path, [fold_dir, f"{TENSORBOARD_DIR}/fold_{task.fold_number}"])
    finally:
        run.flush()
        shutil.rmtree(run.path, ignore_errors=True)


def frozen_head_inputs(config: RunConfig, features, num_classes: int):
    """The FrozenBackbone of a fold task that received the pooled rows' cached features, else None."""
    if features is None or config.model.transfer_mode not in ("frozen", "fine-tune"):
        return None
    from zoidberg.training.frozen_heads import FrozenBackbone

    return FrozenBackbone(config.model, config.data.image_size, num_classes, features)


def load_frozen_backbone(run: Run, config: RunConfig, dataset: Dataset, indices: np.ndarray, say: Reporter, announce: bool = True):
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


def train_fold(
    run, config, dataset, images, labels, train_part, validation_part, fold_number, say, frozen=None
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
    # Streamed images are read through their cache file's mapping and must not stay resident.
    logged += images.callbacks()
    start = time.perf_counter()
    random_state = config.random_state + fold_number
    from zoidberg.inference.decisions import as_class_probabilities
    from zoidberg.training.callbacks import ValidationPass
    from zoidberg.training.devices import describe_precision, distribution_scope, precision_policy

    validation_pass = ValidationPass()
    with precision_policy(config.precision, architecture=config.model.architecture) as policy, distribution_scope() as strategy:
        said = describe_precision(policy, config.precision)
        if said and fold_number == 1:
            say(said)
        if strategy is not None and fold_number == 1:
            say(f"Each fold trains data-parallel over {strategy.num_replicas_in_sync} GPUs (MirroredStrategy).")
        if frozen is not None and config.model.transfer_mode == "fine-tune":
            model, history = fine_tune_from_features(
                frozen, config, images, labels, train_part, validation_part, logged, random_state, dataset.num_classes, validation_pass
            )
        elif frozen is None:
            model, history = train_model(
                config.model,
                config.train,
                images,
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
        probabilities = predict_probabilities(model, images, validation_part, tta=True) if config.tta else frozen.probabilities(head, validation_part)
    elif config.tta or validation_pass.kept_outputs is None:
        probabilities = predict_probabilities(model, images, validation_part, tta=config.tta)
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


def fine_tune_from_features(frozen, config, images, labels, train_part, validation_part, callbacks, random_state, num_classes, validation_pass=None):
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
        model, config.model, config.train, images, labels, train_part, validation_part, num_classes=num_classes,
        random_state=random_state, callbacks=callbacks, initial_epoch=warmup, validation_pass=validation_pass,
    )
    return model, {key: list(history.get(key, [])) + list(more.get(key, [])) for key in set(history) | set(more)}

