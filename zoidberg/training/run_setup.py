"""Before any fold trains: a configuration checked against its weights and data, and the facts a run records of its data."""

from __future__ import annotations

import csv

import numpy as np

from zoidberg.config import RunConfig
from zoidberg.data.dataset import Dataset, load_dataset
from zoidberg.data.folds import check_fold_count, fold_table
from zoidberg.runs.store import DATA_FILE, FOLDS_FILE, HASHES_FILE, Run, open_csv, write_atomically
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


def record_data_facts(run: Run, dataset: Dataset, indices: np.ndarray, fold_of: np.ndarray, duplicates, policy: str, dropped: list[str]) -> None:
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

