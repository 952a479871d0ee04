"""Ensembles of finished runs: members checked, their out-of-fold predictions combined, the threshold fitted on them."""

from __future__ import annotations

import csv
import shutil
import time

import numpy as np

from zoidberg.evaluation import metrics
from zoidberg.config import EnsembleConfig
from zoidberg.evaluation.combination import Combiner, fit_combiner, out_of_fold_combination
from zoidberg.runs import progress as events
from zoidberg.runs.store import (
    DATA_FILE,
    ENSEMBLE_FILE,
    MEMBERS_FILE,
    FOLD_METRICS_FILE,
    FOLDS_FILE,
    HASHES_FILE,
    OOF_FILE,
    Run,
    RunStore,
    open_csv,
    write_atomically,
    write_json_atomic,
)
from zoidberg.runs.worker import Reporter, RunStopped, execute, mark_running, quiet, reopen

# ---------------------------------------------------------------------------------------
# Members: checked before the run exists, aligned by image path when it runs.
# ---------------------------------------------------------------------------------------


def load_members(config: EnsembleConfig, store: RunStore) -> list[Run]:
    """Returns the member runs after checking that they can form an ensemble.

    Raises:
        ValueError: A member is missing, unfinished, not a cross-validation run, of another
            label mode or trained on other data; or stacking of three-class runs.
    """
    from zoidberg.runs.store import RunNotFoundError

    members = []
    for run_id in config.members:
        try:
            run = store.get(run_id)
        except (RunNotFoundError, ValueError):
            raise ValueError(f"Run {run_id} is not in {store.root}.") from None
        if run.kind != "cv":
            raise ValueError(f"Run {run_id} is a {run.kind} run: ensembles combine cross-validation runs.")
        if run.state != "completed":
            raise ValueError(f"Run {run_id} is {run.state}: only completed runs (every fold's out-of-fold predictions) can join.")
        members.append(run)
    modes = {(run.config.get("data") or {}).get("label_mode", "binary") for run in members}
    if len(modes) > 1:
        raise ValueError(f"The members mix label modes ({', '.join(sorted(modes))}): choose runs of one label mode.")
    fingerprints = {(run.read_json(DATA_FILE) or {}).get("fingerprint") or run.config.get("data_fingerprint") for run in members}
    if len(fingerprints) > 1:
        names = ", ".join(f"{run.id} ({(run.config.get('data') or {}).get('data_dir')})" for run in members)
        raise ValueError(
            f"The members were trained on different data ({names}): their out-of-fold predictions cover other images, "
            "so no threshold can be fitted on them together. Choose runs of one data folder."
        )
    if config.method == "stacking" and modes == {"three-class"}:
        raise ValueError("Stacking combines P(pneumonia) of binary runs; use the mean for three-class runs.")
    return members


def prepare_ensemble(config: EnsembleConfig, store: RunStore | None = None) -> dict:
    """Checks an ensemble's members and the runs it will train, and returns its config.json payload.

    The payload names the first member's data settings as the ensemble's own: evaluations
    read a folder with them, and every other member reads it again with its own. Each
    recipe is prepared as `cv` prepares a run (weights, data, k), so that nothing fails
    half-way through training the members.

    Raises:
        ValueError, FileNotFoundError: As load_members and prepare_run.
    """
    from zoidberg.training.run_setup import prepare_run
    from zoidberg.versions import package_versions

    store = store or RunStore()
    members = load_members(config, store) if config.members else []
    recipes = [prepare_run(recipe) for recipe in config.recipes]
    references = [run.config for run in members] + recipes
    fingerprints = {reference.get("data_fingerprint") for reference in references}
    modes = {(reference.get("data") or {}).get("label_mode", "binary") for reference in references}
    if len(fingerprints) > 1 or len(modes) > 1:
        raise ValueError("The runs to train and the runs to join use other data or label modes: choose runs of one data folder.")
    reference = references[0]
    return {
        **config.to_dict(),
        "recipes": recipes,
        "data": reference.get("data"),
        "n_splits": reference.get("n_splits"),
        "random_state": reference.get("random_state"),
        "data_fingerprint": reference.get("data_fingerprint"),
        "member_names": {run.id: run.name for run in members},
        "versions": package_versions(),
    }


def describe_recipe(config) -> str:
    """A member's name when an ensemble trains it: its preset, or its architecture and size."""
    what = config.preset or config.model.architecture
    return f"{what} - {config.model.architecture} {config.data.image_size} px"


def train_members(run: Run, store: RunStore, say: Reporter) -> list[str]:
    """Trains the ensemble's recipes one after another as ordinary cross-validation runs, in this worker.

    Each member is a run of its own in the store (listed, reusable, resumable); members.json
    maps each recipe to its run, so that a resumed ensemble continues the member it was
    training and keeps those that completed.

    Returns:
        The member run ids, in recipe order.

    Raises:
        RunStopped: A stop was requested (the member in training is stopped too).
    """
    from zoidberg.config import RunConfig
    from zoidberg.training.cv import run_cross_validation

    recipes = run.config.get("recipes") or []
    trained = {int(key): value for key, value in (run.read_json(MEMBERS_FILE) or {}).items()}
    ids = []
    for index, payload in enumerate(recipes):
        if run.stop_requested:
            raise RunStopped()
        recipe = RunConfig.from_dict(payload)
        name = recipe.run_name or f"{run.name} - member {index + 1}: {describe_recipe(recipe)}"
        member = store.get(trained[index]) if index in trained and (store.root / trained[index]).is_dir() else None
        if member is None:
            # member_of lets the dashboard show the ensemble, not its newest member, as the active run.
            member = store.create_run("cv", {**payload, "member_of": run.id}, name[:80])
            trained[index] = member.id
            run.write_json(MEMBERS_FILE, {str(key): value for key, value in trained.items()})
        elif member.state == "completed":
            ids.append(member.id)
            continue
        else:
            member = reopen(member)
        run.append_event(events.MEMBER_STARTED, index=index + 1, n_members=len(recipes), run_id=member.id, name=member.name)
        say(f"Member {index + 1}/{len(recipes)}: {member.name} ({member.id})")
        run_cross_validation(member, report=lambda line, index=index: say(f"  [member {index + 1}] {line}"))
        state = member.state
        run.append_event(events.MEMBER_FINISHED, index=index + 1, n_members=len(recipes), run_id=member.id, state=state)
        if state != "completed":
            raise RunStopped()
        ids.append(member.id)
    return ids


def _read_member_rows(run: Run) -> tuple[list[dict], np.ndarray]:
    """A member's folds.csv rows and its (N, C) out-of-fold probabilities in the same order."""
    from zoidberg.evaluation.out_of_fold import read_out_of_fold

    out_of_fold = read_out_of_fold(run)
    with run.open_text(FOLDS_FILE) as handle:
        rows = list(csv.DictReader(handle))
    return rows, out_of_fold.raw


def align_members(members: list[Run]) -> tuple[list[dict], np.ndarray]:
    """Aligns the members' out-of-fold predictions by image path, in the first member's order.

    Members that treated duplicates differently cover slightly different images; only the
    images every member scored are kept.

    Returns:
        (the first member's folds.csv rows that all share, (members, N, C) probabilities).

    Raises:
        ValueError: The members share too few images.
    """
    reference_rows, reference = _read_member_rows(members[0])
    columns = [dict(zip((row["path"] for row in reference_rows), reference))]
    for run in members[1:]:
        rows, probabilities = _read_member_rows(run)
        columns.append(dict(zip((row["path"] for row in rows), probabilities)))
    shared = [row for row in reference_rows if all(row["path"] in column for column in columns)]
    if len(shared) < 0.5 * len(reference_rows):
        raise ValueError(
            f"The members share out-of-fold predictions of only {len(shared)} of {len(reference_rows)} images: "
            "they were not trained on the same images."
        )
    stacked = np.stack([np.stack([column[row["path"]] for row in shared]) for column in columns])
    return shared, stacked


# ---------------------------------------------------------------------------------------
# The worker's body.
# ---------------------------------------------------------------------------------------


def run_ensemble(run: Run, *, report: Reporter | None = None) -> dict:
    """Builds an ensemble run from its config.json: combined out-of-fold predictions, calibration, threshold, test split.

    The ensemble's folds are its first member's: each image's combined probability comes
    from members that never trained on it, and the per-fold figures use those folds.

    Returns:
        The summary (also summary.json).
    """
    say = report or quiet
    return execute(run, lambda: _build(run, say), lambda: _stopped(run, say), say=say, what="Ensemble")


def _build(run: Run, say: Reporter) -> dict:
    from zoidberg.training.run_end import finish_summary, summarize_out_of_fold

    config = EnsembleConfig.from_dict(run.config)
    store = RunStore(run.path.parent)
    mark_running(run, n_folds=run.config.get("n_splits"), members=list(config.members), n_recipes=len(config.recipes))
    trained = train_members(run, store, say)
    start = time.perf_counter()
    config = EnsembleConfig(members=config.members + tuple(trained), method=config.method, operating_point=config.operating_point,
                            calibration_method=config.calibration_method, run_name=config.run_name)
    members = load_members(config, store)
    rows, member_probabilities = align_members(members)
    say(f"Ensemble of {len(members)} runs ({config.method}) on the {len(rows)} images every member scored out of fold.")
    data = members[0].read_json(DATA_FILE) or {}
    class_names = list(data.get("class_names") or (members[0].summary() or {}).get("class_names") or [])
    labels = np.array([class_names.index(row["label"]) for row in rows])
    fold_of = np.array([int(row["fold"]) - 1 for row in rows])
    combiner = fit_combiner(config.method, member_probabilities, labels)
    combined = out_of_fold_combination(config.method, member_probabilities, labels, fold_of)
    if run.stop_requested:
        raise RunStopped()
    _write_run_files(run, members[0], rows, labels, fold_of, combined, class_names, combiner)
    member_facts = [_member_facts(member, probabilities, labels, class_names) for member, probabilities in zip(members, member_probabilities)]
    for fact in member_facts:
        say(f"  member {fact['name']}: out-of-fold AUC {metrics_text(fact['roc_auc'])}")
    if combiner.method == "stacking":
        weights = ", ".join(f"{fact['name']} {weight:+.2f}" for fact, weight in zip(member_facts, combiner.coefficients))
        say(f"Stacking weights on the logit of P(pneumonia): {weights}")
    seconds = [time.perf_counter() - start] * (int(fold_of.max()) + 1)
    summary = summarize_out_of_fold(
        run, config, labels, combined, fold_of, class_names, seconds, say,
        members=member_facts, method=config.method, combiner=combiner.to_dict(),
    )
    summary["test"] = _evaluate_test_split(run, say)
    return finish_summary(run, summary, say, what="Ensemble")


def metrics_text(value) -> str:
    """A metric with three decimals, or n/a."""
    return "n/a" if value is None else f"{value:.3f}"


def _member_facts(member: Run, probabilities: np.ndarray, labels: np.ndarray, class_names) -> dict:
    """What the summary says of one member: its name and its out-of-fold AUC on the shared images."""
    figures = metrics.evaluate_predictions(labels, probabilities, class_names, 0.5)
    auc = figures.get("roc_auc", figures.get("macro_auc"))
    model = member.config.get("model") or {}
    return {
        "run_id": member.id,
        "name": member.name,
        "architecture": model.get("architecture"),
        "image_size": (member.config.get("data") or {}).get("image_size"),
        "roc_auc": None if auc is None or not np.isfinite(auc) else float(auc),
    }


def _write_run_files(run, reference: Run, rows, labels, fold_of, combined, class_names, combiner: Combiner) -> None:
    """Writes what any run has after its folds: folds.csv, each fold's oof.npz and metrics.json, data facts."""
    def write_folds(path):
        # A file name that is not valid UTF-8 is kept byte for byte, as Run.open_text reads it back.
        with open_csv(path, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=["path", "patient", "label", "fold"])
            writer.writeheader()
            writer.writerows({key: row[key] for key in ("path", "patient", "label", "fold")} for row in rows)

    write_atomically(run.path / FOLDS_FILE, write_folds)
    for name in (DATA_FILE, HASHES_FILE):
        # The leakage checks of later evaluations compare against the members' training images.
        if (reference.path / name).exists():
            shutil.copyfile(reference.path / name, run.path / name)
    run.write_json(ENSEMBLE_FILE, combiner.to_dict())
    for fold in range(int(fold_of.max()) + 1):
        indices = np.flatnonzero(fold_of == fold)
        fold_dir = run.fold_dir(fold + 1)
        write_atomically(fold_dir / OOF_FILE, lambda path: np.savez_compressed(path, indices=indices, probabilities=combined[indices]))
        figures = metrics.evaluate_predictions(labels[indices], combined[indices], class_names, 0.5)
        write_json_atomic(
            fold_dir / FOLD_METRICS_FILE,
            {"fold": fold + 1, "metrics": metrics.to_jsonable(figures), "history": {}, "epochs_trained": 0, "train_seconds": 0.0,
             "n_train": int(np.sum(fold_of != fold)), "n_validation": int(len(indices))},
        )
        run.append_event(events.FOLD_FINISHED, fold=fold + 1, n_folds=int(fold_of.max()) + 1, metrics=metrics.to_jsonable(figures), train_seconds=0.0)


def _evaluate_test_split(run: Run, say: Reporter) -> dict | None:
    """Scores the members' test split once (when their data folder has one), as the evaluation "test"."""
    from pathlib import Path

    from zoidberg.data.dataset import find_class_folders
    from zoidberg.inference.evaluate import evaluate_run

    data_dir = (run.config.get("data") or {}).get("data_dir")
    if not data_dir or not Path(data_dir).is_dir() or not any(split == "test" for split, _, _ in find_class_folders(data_dir)):
        return None
    evaluation = evaluate_run(run, data_dir, split="test", name="test", force=True, report=say)
    return {**evaluation["metrics"], "roc": evaluation["roc"], "auc_ci": evaluation["auc_ci"], "evaluation": "test"}


def _stopped(run: Run, say: Reporter) -> dict:
    run.set_status("stopped", error=None)
    run.append_event(events.RUN_FINISHED, state="stopped")
    say(f"Stopped; start the ensemble again with: {run.resume_command()}")
    return {"state": "stopped"}
