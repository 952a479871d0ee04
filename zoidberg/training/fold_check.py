"""Whether a finished fold's files are whole, so that `resume` keeps only folds that will load."""

from __future__ import annotations

import zipfile

import numpy as np

from zoidberg.runs.store import FOLD_METRICS_FILE, OOF_FILE, Run


def fold_problem(run: Run, fold: int) -> str | None:
    """Why a fold marked finished cannot be kept (a damaged file, named), or None when its files are whole.

    Args:
        run: The run.
        fold: The fold (1-based).

    Returns:
        One sentence naming the damaged file, or None.
    """
    metrics = run.read_fold_json(fold)
    if not isinstance(metrics, dict):
        return f"{run.fold_path(fold, FOLD_METRICS_FILE)} is damaged"
    model = run.model_path(fold)
    if not model.is_file():
        return f"{model} is missing"
    try:
        with zipfile.ZipFile(model) as archive:
            if archive.testzip() is not None:
                return f"{model} is damaged (a part fails its checksum)"
    except (zipfile.BadZipFile, OSError, EOFError):
        return f"{model} is damaged (cut short or changed)"
    oof = run.fold_path(fold, OOF_FILE)
    if oof.exists():
        try:
            with np.load(oof) as stored:
                for key in stored.files:
                    # Reading each array inflates it, which is what finds a cut-short file.
                    stored[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            return f"{oof} is damaged"
    return None
