"""Whether a finished fold's files are whole, so that `resume` keeps only folds that will load."""

from __future__ import annotations

import zipfile

import numpy as np

from zoidberg.models.layers import unsafe_layers
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
    unsafe = unsafe_layers(model)
    if unsafe:
        # Such a model is never loaded (safe_mode): keeping the fold would finish a run that cannot predict.
        return f"{model} holds Lambda layer(s) {', '.join(unsafe)}, which safe loading refuses"
    oof = run.fold_path(fold, OOF_FILE)
    if not oof.exists():
        # The out-of-fold predictions feed the calibration and the threshold: without them the run cannot finish.
        return f"{oof} is missing"
    try:
        with np.load(oof) as stored:
            for key in stored.files:
                # Reading each array inflates it, which is what finds a cut-short file.
                stored[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return f"{oof} is damaged"
    return None
