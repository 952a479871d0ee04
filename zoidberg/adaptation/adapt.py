"""The adapt run: a finished run's site heads, fitted on a site's labeled films and measured cross-fitted by patient."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from zoidberg.evaluation import metrics
from zoidberg.adaptation.config import AdaptConfig
from zoidberg.adaptation.crossfit import crossfit_heads
from zoidberg.evaluation.site_figures import describe_figure, describe_harm, site_figures
from zoidberg.config import OperatingPointChoice
from zoidberg.runs import progress as events
from zoidberg.runs.store import (
    ADAPTATION_FILE,
    DATA_FILE,
    FOLD_METRICS_FILE,
    FOLDS_FILE,
    HASHES_FILE,
    MONITOR_REFERENCE_FILE,
    OOF_FILE,
    Run,
    RunNotFoundError,
    RunStore,
    SITE_LABELS_FILE,
    open_csv,
    write_atomically,
    write_json_atomic,
)
from zoidberg.runs.worker import Reporter, RunStopped, execute, mark_running, quiet

# The kinds of run that can adapt: a model of their own (an adapted run adapts again from its parent).
ADAPTABLE_KINDS = ("cv", "ensemble")


def load_parent(parent_id: str, store: RunStore) -> Run:
    """The run to adapt, checked.

    Raises:
        ValueError: Missing, unfinished, of another kind, or three-class.
    """
    try:
        parent = store.get(parent_id)
    except (RunNotFoundError, ValueError):
        raise ValueError(f"Run {parent_id} is not in {store.root} (see `python -m zoidberg runs`).") from None
    if parent.kind not in ADAPTABLE_KINDS:
        hint = f" Adapt its parent {parent.config.get('parent')} instead." if parent.kind == "adapt" else ""
        raise ValueError(f"Run {parent_id} is a {parent.kind} run: adapt a cross-validation or ensemble run.{hint}")
    if parent.state != "completed" or parent.summary() is None:
        raise ValueError(f"Run {parent_id} is {parent.state}: only a completed run can adapt.")
    if len((parent.summary() or {}).get("class_names") or ()) != 2:
        raise ValueError(f"Run {parent_id} is three-class: adaptation fits a normal-vs-pneumonia head.")
    return parent


def member_runs(parent: Run, store: RunStore) -> list[Run]:
    """The cross-validation runs whose models score for the parent: its members, or itself."""
    if parent.kind == "cv":
        return [parent]
    ids = [member["run_id"] for member in (parent.summary() or {}).get("members") or []]
    return [store.get(run_id) for run_id in ids]


def frozen_member(parent: Run, store: RunStore) -> Run | None:
    """The parent's first member with a frozen ImageNet backbone (its features do not depend on the fold), if any."""
    for member in member_runs(parent, store):
        if (member.config.get("model") or {}).get("transfer_mode") == "frozen":
            return member
    return None


def load_site(config: AdaptConfig, data: dict, *, progress=None, labels=None):
    """The site's labeled films (a folder, or a labels file) read as the parent reads images (its size, resize and contrast).

    Args:
        config: The adaptation.
        data: The parent's data block (image size, resize, contrast).
        progress: Called as progress(done, total) while decoding.
        labels: The labels already read (an adapt run reads its own copy); default: config.labels_file.

    Raises:
        ValueError: Not a labeled binary folder, an unreadable labels file, or too few patients of a class for the parts.
    """
    from zoidberg.config import DataConfig, from_mapping
    from zoidberg.data.dataset import load_dataset

    if config.labels_file:
        from zoidberg.data.labeled_films import load_labeled_films
        from zoidberg.data.site_labels import read_labels

        options = from_mapping(DataConfig, {**data, "data_dir": str(Path(config.labels_file).parent), "label_mode": "binary"}).loader_options()
        options.pop("label_mode", None)
        site = load_labeled_films(labels or read_labels(config.labels_file), **options, progress=progress)
    else:
        if not Path(config.site_dir).is_dir():
            raise ValueError(f"The site folder {config.site_dir} does not exist: name a folder with NORMAL/ and PNEUMONIA/ inside.")
        options = from_mapping(DataConfig, {**data, "data_dir": config.site_dir, "label_mode": "binary"}).loader_options()
        site = load_dataset(config.site_dir, **options, purpose="training", progress=progress)
    for label, name in enumerate(site.class_names):
        patients = len(np.unique(site.patients[site.labels == label]))
        if patients < config.n_parts:
            raise ValueError(
                f"The site's films have {patients} patient(s) with {name} films: cross-fitting in {config.n_parts} parts needs at "
                f"least {config.n_parts} of each class (lower --parts, or label more films)."
            )
    return site


def prepare_adaptation(config: AdaptConfig, store: RunStore | None = None) -> dict:
    """Checks an adaptation before its run exists and returns its config.json.

    Raises:
        ValueError: As load_parent and load_site; the site is the parent's own training data;
            the "head" method and a parent without a frozen member; a missing unlabeled folder.
    """
    from zoidberg.versions import package_versions

    store = store or RunStore()
    parent = load_parent(config.parent, store)
    data = dict(parent.config.get("data") or {})
    site = load_site(config, data)
    parent_fingerprint = parent.config.get("data_fingerprint") or (parent.read_json(DATA_FILE) or {}).get("fingerprint")
    if site.fingerprint == parent_fingerprint:
        raise ValueError(f"{config.site_name} is the data run {parent.id} trained on: adapt on the site's own films, which it never saw.")
    feature = frozen_member(parent, store)
    if config.method == "head" and feature is None:
        raise ValueError(
            f"Run {parent.id} has no frozen-backbone member whose features a site head can read: use --method recalibrate, "
            "or adapt a fast or best run."
        )
    if config.unlabeled_dir and not Path(config.unlabeled_dir).is_dir():
        raise ValueError(f"The unlabeled folder {config.unlabeled_dir} does not exist.")
    choice = config.operating_point or _parent_choice(parent)
    return {
        **config.to_dict(),
        "operating_point": choice.to_dict(),
        "data": data,
        "n_splits": config.n_parts,
        "random_state": config.random_state,
        "parent_kind": parent.kind,
        "parent_name": parent.name,
        "parent_fingerprint": parent_fingerprint,
        "site_fingerprint": site.fingerprint,
        "feature_member": feature.id if feature is not None and config.method == "head" else None,
        "versions": package_versions(),
    }


def keep_labels(run: Run, config: AdaptConfig):
    """The labels this run adapts on: its copy of the labels file, taken on its first start and read on every resume."""
    from zoidberg.data.site_labels import read_labels

    original = Path(config.labels_file).expanduser().resolve()
    copy = run.path / (SITE_LABELS_FILE + (original.suffix or ".jsonl"))
    if not copy.exists():
        if not original.is_file():
            raise ValueError(f"The labels file {original} does not exist.")
        data = original.read_bytes()
        write_atomically(copy, lambda path: path.write_bytes(data))
    return read_labels(copy, films_folder=original.parent)


def _labels_facts(config: AdaptConfig, labels) -> dict:
    """Where the labels came from: the labels file, the digest of what was read, and its counts (nothing for a folder)."""
    if labels is None:
        return {}
    return {
        "labels_file": str(Path(config.labels_file).resolve()), "labels_digest": labels.digest,
        "labels_counts": {name: labels.count(name) for name in ("normal", "pneumonia", "not_usable")},
        "labels_disagreements": len(labels.disagreements),
    }


def _parent_choice(parent: Run) -> OperatingPointChoice:
    """The parent's threshold rule (operating_point.json), or sensitivity 95 % where it has none."""
    from zoidberg.runs.store import OPERATING_POINT_FILE

    stored = (parent.read_json(OPERATING_POINT_FILE) or {}).get("choice")
    choice = OperatingPointChoice.from_dict(stored) if stored else OperatingPointChoice(method="target-sensitivity", target=0.95)
    # The parent's prevalence was its training data's; the site's own films state the site's.
    return OperatingPointChoice(choice.method, target=choice.target, cost_ratio=choice.cost_ratio, prevalence=None,
                                probabilities=choice.probabilities)


def run_adaptation(run: Run, *, report: Reporter | None = None) -> dict:
    """The worker's body of an adapt run (an adaptation takes seconds to minutes: a resume does it again).

    Returns:
        The summary (also summary.json).
    """
    say = report or quiet
    return execute(run, lambda: _adapt(run, say), lambda: _stopped(run, say), say=say, what="Adaptation")


def _adapt(run: Run, say: Reporter) -> dict:
    from zoidberg.data.duplicates import file_digests
    from zoidberg.inference.adapted import AdaptedEnsemble
    from zoidberg.inference.loading import load_ensemble

    config = AdaptConfig.from_dict(run.config)
    store = RunStore(run.path.parent)
    mark_running(run, n_folds=config.n_parts, parent=config.parent)
    start = time.perf_counter()
    parent = load_ensemble(config.parent, runs_dir=store.root)
    labels_read = keep_labels(run, config) if config.labels_file else None
    site = load_site(config, run.config.get("data") or {}, labels=labels_read)
    # A labels file grows while its readers label: the run reads its own copy, taken when it started.
    if labels_read is None and site.fingerprint != run.config.get("site_fingerprint"):
        raise ValueError(f"The films or labels of {config.site_name} changed since this adaptation was started: start a new `adapt`.")
    rows = np.arange(len(site))
    labels, groups = site.labels[rows].astype(int), site.patients[rows].astype(str)
    feature = next((member for member in getattr(parent, "members", [parent]) if member.run.id == run.config.get("feature_member")), None)
    probe = AdaptedEnsemble(run, parent, [], feature, None, 0.5, "raw", None)
    say(f"Scoring the {len(site)} site films ({int(labels.sum())} pneumonia, {len(np.unique(groups))} patients) with run {parent.run.id} ...")
    # The parent scores the site's films once: for the heads' inputs and for its zero-shot figures.
    per_member = parent.score_dataset(site, rows)
    inputs = probe.site_inputs(site, rows, per_member=per_member)
    n_prior = len(probe._members)
    zero_shot, calibrated_positive = _zero_shot(parent, per_member, labels, groups)
    say(f"Zero-shot, at run {parent.run.id}'s own threshold: AUC {describe_figure(zero_shot['roc_auc'])}, "
        f"accuracy {describe_figure(zero_shot['accuracy'])}, specificity {describe_figure(zero_shot['specificity'])}: {describe_harm(zero_shot)}.")
    shift = _shift(parent, site, rows, labels, calibrated_positive)
    say(f"Shift check: {shift['sentence']}")
    if run.stop_requested:
        raise RunStopped()
    unlabeled = _unlabeled_inputs(probe, config, say) if config.unlabeled_dir else None
    if config.method == "recalibrate":
        inputs = inputs[:, :n_prior]
        unlabeled = None if unlabeled is None else unlabeled[:, :n_prior]
    crossfit = crossfit_heads(inputs, labels, groups, config.operating_point, n_prior=n_prior, n_parts=config.n_parts,
                              unlabeled=unlabeled, random_state=config.random_state)
    adapted = site_figures(labels, crossfit.positive, crossfit.decided, groups)
    say(f"Adapted, cross-fitted by patient in {config.n_parts} parts (each part scored and decided by heads fitted without it): "
        f"AUC {describe_figure(adapted['roc_auc'])}, accuracy {describe_figure(adapted['accuracy'])}, "
        f"sensitivity {describe_figure(adapted['sensitivity'])}, specificity {describe_figure(adapted['specificity'])}: {describe_harm(adapted)}.")
    digests = file_digests(site.root, list(site.paths))
    _write_run_files(run, parent.run, site, rows, labels, crossfit, digests)
    # What the monitor compares a clinic's new films with: the gate's scores of these site films.
    run.write_json(MONITOR_REFERENCE_FILE, _site_gate_scores(parent, site, rows))
    run.write_json(ADAPTATION_FILE, {
        "parent": parent.run.id,
        "method": config.method,
        "feature_member": run.config.get("feature_member"),
        "n_prior": n_prior,
        "site_dir": str(site.root),
        **_labels_facts(config, labels_read),
        "site_fingerprint": site.fingerprint,
        "site_digests": sorted(set(digest for digest in digests if digest)),
        "part_thresholds": crossfit.thresholds,
        "heads": [head.to_dict() for head in crossfit.heads],
    })
    seconds = time.perf_counter() - start
    from zoidberg.training.run_end import finish_summary, summarize_out_of_fold

    oof = np.stack([1.0 - crossfit.positive, crossfit.positive], axis=1)
    summary = summarize_out_of_fold(
        run, config, labels, oof, crossfit.part_of, list(site.class_names), [seconds / config.n_parts] * config.n_parts, say,
        adaptation={
            "parent": parent.run.id, "parent_name": parent.run.name, "method": config.method, "n_parts": config.n_parts,
            "site_dir": str(site.root), **_labels_facts(config, labels_read), "zero_shot": zero_shot, "adapted": adapted, "shift": shift,
            "part_thresholds": crossfit.thresholds, "seconds": seconds,
            "heads_c": [head.c for head in crossfit.heads],
        },
    )
    say(f"Adaptation took {seconds:.0f} s. Its threshold for new films of this site: {summary['threshold']:.3f} ({summary['operating_point']}).")
    return finish_summary(run, summary, say, what="Adaptation (the threshold for new films, chosen on every part's cross-fitted scores)")


def _zero_shot(parent, per_member: np.ndarray, labels, groups) -> tuple[dict, np.ndarray | None]:
    """The parent's own figures on the site films (its probabilities at its own threshold and scale), and its calibrated P(pneumonia)."""
    raw, calibrated = parent.combine(per_member)
    in_use = calibrated if parent.scale == "calibrated" and calibrated is not None else raw
    decided = (in_use[:, 1] >= parent.threshold).astype(int)
    figures = {**site_figures(labels, raw[:, 1], decided, groups), "threshold": float(parent.threshold), "scale": parent.scale}
    return figures, None if calibrated is None else calibrated[:, 1]


def _shift(parent, site, rows, labels, calibrated_positive) -> dict:
    """How far the site's films are from the parent's training films (evaluation.shift)."""
    from zoidberg.evaluation.shift import measure_shift

    return measure_shift(parent, site, rows, calibrated_positive=calibrated_positive, stated_prevalence=float(np.mean(labels == 1)))


def _unlabeled_inputs(probe, config: AdaptConfig, say: Reporter) -> np.ndarray | None:
    """Head inputs of the unlabeled site films (standardization only), or None when the folder holds none."""
    from zoidberg.data.files import collect_images
    from zoidberg.data.imaging import decode_grayscale

    paths, _ = collect_images([config.unlabeled_dir])
    grays = []
    for path in paths:
        try:
            grays.append(decode_grayscale(path, draft_size=1024))
        except ValueError:
            continue
    if not grays:
        say(f"No readable image in {config.unlabeled_dir}: the unlabeled films are left out.")
        return None
    say(f"{len(grays)} unlabeled site films join the features' standardization.")
    return probe._head_inputs(probe.member_positive_of_images(grays), probe._features_of_images(grays))


def _write_run_files(run: Run, parent: Run, site, rows, labels, crossfit, digests) -> None:
    """folds.csv of the site films with their part, each part's oof.npz and metrics.json, data.json and hashes.json."""
    class_names = list(site.class_names)

    def write_folds(path):
        # A file name that is not valid UTF-8 is kept byte for byte, as Run.open_text reads it back.
        with open_csv(path, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=["path", "patient", "label", "fold"])
            writer.writeheader()
            for row, part in zip(rows, crossfit.part_of):
                writer.writerow({"path": site.paths[row], "patient": site.patients[row], "label": class_names[site.labels[row]], "fold": int(part) + 1})

    write_atomically(run.path / FOLDS_FILE, write_folds)
    # The leakage check of a later evaluation compares against the parent's training films and
    # the site films the heads learned from.
    hashes = dict(parent.read_json(HASHES_FILE) or {})
    hashes.update({f"site:{site.paths[row]}": digest for row, digest in zip(rows, digests) if digest})
    run.write_json(HASHES_FILE, hashes)
    run.write_json(DATA_FILE, {
        "root": str(site.root), "fingerprint": site.fingerprint, "synthetic": site.synthetic, "class_names": class_names,
        "n_images": int(len(rows)), "n_patients": int(len(np.unique(site.patients[rows]))), "class_counts": site.class_counts(rows),
        "n_test": 0, "skipped": [{"path": item.path, "reason": item.reason} for item in site.skipped],
        "fold_sizes": np.bincount(crossfit.part_of).tolist(), "adapted_from": parent.id,
    })
    oof = np.stack([1.0 - crossfit.positive, crossfit.positive], axis=1)
    for part in range(int(crossfit.part_of.max()) + 1):
        held = crossfit.scored_rows_of(part)
        write_atomically(run.fold_dir(part + 1) / OOF_FILE, lambda path: np.savez_compressed(path, indices=held, probabilities=oof[held]))
        figures = metrics.evaluate_predictions(labels[held], oof[held], class_names, crossfit.thresholds[part])
        write_json_atomic(run.fold_dir(part + 1) / FOLD_METRICS_FILE, {
            "fold": part + 1, "metrics": metrics.to_jsonable(figures), "history": {}, "epochs_trained": 0, "train_seconds": 0.0,
            "n_train": int(len(rows) - len(held)), "n_validation": int(len(held)), "threshold": crossfit.thresholds[part],
        })
        run.append_event(events.FOLD_FINISHED, fold=part + 1, n_folds=int(crossfit.part_of.max()) + 1,
                         metrics=metrics.to_jsonable(figures), train_seconds=0.0)


def _stopped(run: Run, say: Reporter) -> dict:
    run.set_status("stopped", error=None)
    run.append_event(events.RUN_FINISHED, state="stopped")
    say(f"Stopped; adapt again with: {run.resume_command()}")
    return {"state": "stopped"}


def _site_gate_scores(parent, site, rows: np.ndarray) -> dict:
    """The gate's scores of an adaptation's site films, stored with the adapted run for the monitor.

    Args:
        parent: The loaded parent run (its gate is the adapted run's).
        site: The site's data set, at the parent's size.
        rows: The site films.

    Returns:
        {"films", "ood_score" (one per film; empty where the run has no gate), "refused_share", "pixel_mean", "pixel_std"}.
    """
    verdicts = parent.gate_verdicts([site.images[row] for row in rows], prepared=True)
    scores = [None if verdict is None else round(float(verdict.ood_score), 5) for verdict in verdicts]
    refused = sum(1 for verdict in verdicts if verdict is not None and not verdict.in_distribution)
    known = [score for score in scores if score is not None]
    from zoidberg.inference.scoring import film_exposure

    exposures = [film_exposure(site.images[row]) for row in rows]
    return {"films": len(rows), "ood_score": known if len(known) == len(scores) else [],
            "refused_share": refused / len(rows) if len(rows) else 0.0,
            "pixel_mean": [item["pixel_mean"] for item in exposures], "pixel_std": [item["pixel_std"] for item in exposures]}
